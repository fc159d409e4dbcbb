"""The variants demo app: says which variant's framework it runs on, and its packages."""

import sys

import attrs
import idna
import six


def main() -> None:
    below = [p for p in sys.path if "framework-accel-" in p]
    variant = below[0].split("framework-accel-")[1].split("/")[0] if below else "?"
    print(f"variant {variant}: six {six.__version__}, attrs {attrs.__version__}, idna {idna.__version__}")


if __name__ == "__main__":
    main()
