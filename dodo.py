"""doit entry point of this repository: `doit list`, `doit lock`, ... for `doit spec=PATH`
(default: specs/demo.toml). A project's own dodo.py is `from stacks.pipeline.doit_project import *`."""

from stacks.pipeline.doit_project import project_namespace

globals().update(project_namespace(default_spec="specs/demo.toml"))
