"""The function's settings as deploy.sh passes them on, derived from counter/config.py.

    python3 -m scripts.deploy_settings             # this deploy's values
    python3 -m scripts.deploy_settings --defaults  # a deploy's values with nothing set (--help)

It prints one line per setting that counter/config.py marks passed-on, in Settings order:

    NAME given VALUE     set by the user: in the environment, else as a repository variable
    NAME deployed VALUE  left unset, and counter/config.py gives it a deployed default
    NAME unset           left unset: the function keeps its own default

Repository variables are read from REPOSITORY_VARIABLES, a JSON object as GitHub Actions'
`${{ toJSON(vars) }}` gives it; an empty value counts as unset, as the function reads it. NAME is
a variable name and the second word one of three, so bash splits a line at its first two spaces
and VALUE is the rest, whole (spaces, quotes and backslashes included): `IFS= read -r line`, then
parameter expansion and `printf -v`, never eval. A value holding a newline would break its line
and a NUL cannot pass through bash: either is refused, with exit status 2 and a message naming
the variable. Only the standard library and counter.config, so a bare python3 (3.9 or later)
runs it with nothing installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping

from counter import config

REPOSITORY_VARIABLES = "REPOSITORY_VARIABLES"


class SettingError(ValueError):
    """A value that deploy.sh cannot pass on; the message names its variable."""


def repository_variables(env: Mapping[str, str]) -> Mapping[str, object]:
    """The repository variables in REPOSITORY_VARIABLES; none when it is unset or empty."""
    raw = env.get(REPOSITORY_VARIABLES, "").strip()
    if not raw:
        return {}
    try:
        variables = json.loads(raw)
    except ValueError:
        variables = None
    if not isinstance(variables, dict):
        raise SettingError(
            f"{REPOSITORY_VARIABLES} must be a JSON object of repository variables, "
            "as ${{ toJSON(vars) }} gives it"
        )
    return variables


def one_line(name: str, value: object) -> str:
    """The value, checked to be text that fits on one of the lines deploy.sh reads."""
    if not isinstance(value, str):
        raise SettingError(f"{name} in {REPOSITORY_VARIABLES} must be a string, not {value!r}")
    for character, what in (("\n", "a newline"), ("\0", "a NUL character")):
        if character in value:
            raise SettingError(f"{name} holds {what}; a setting must be one line of text")
    return value


def lines(env: Mapping[str, str], *, defaults_only: bool = False) -> list[str]:
    """deploy.sh's line for each passed-on setting; with defaults_only, as if none were set."""
    variables = {} if defaults_only else repository_variables(env)
    deployed = config.deployed_defaults()
    result = []
    for name in config.env_names(deploy="passed-on"):
        given = None if defaults_only else env.get(name) or variables.get(name)
        if given:
            result.append(f"{name} given {one_line(name, given)}")
        elif name in deployed:
            result.append(f"{name} deployed {one_line(name, deployed[name])}")
        else:
            result.append(f"{name} unset")
    return result


def main(argv: list[str] | None = None) -> int:
    """Print the lines; 2 with a message naming the variable when a value cannot be passed on."""
    parser = argparse.ArgumentParser(
        prog="python3 -m scripts.deploy_settings",
        description="The function's settings as deploy.sh passes them on.",
    )
    parser.add_argument(
        "--defaults", action="store_true", help="ignore the environment: a deploy with none set"
    )
    args = parser.parse_args(argv)
    try:
        text = "".join(f"{line}\n" for line in lines(os.environ, defaults_only=args.defaults))
    except SettingError as error:
        print(error, file=sys.stderr)
        return 2
    # As bytes: a value from the environment comes back exactly as it was given.
    sys.stdout.buffer.write(os.fsencode(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
