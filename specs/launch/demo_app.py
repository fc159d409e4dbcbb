"""The demo application: uses a package from its framework and one of its own."""

import sys

import attrs
import idna


@attrs.define
class Greeting:
    text: str


def main() -> None:
    host = idna.encode("bücher.example").decode("ascii")
    greeting = Greeting(f"hello from the demo stack: attrs {attrs.__version__}, idna -> {host}")
    print(greeting.text)
    print(f"python {sys.version_info.major}.{sys.version_info.minor} at {sys.prefix}")


if __name__ == "__main__":
    main()
