"""docs/cli.md's table of every setting, rendered from the declarations in `vl2cli.settings`.

The table is generated, not written by hand, so it cannot drift from the flags, variables and
defaults the CLI really has (tests/test_settings.py checks docs/cli.md holds it as rendered now).
Regenerate with `python -m vl2cli.settings_table`.
"""
from __future__ import annotations

from .settings import (GROUPS, SETTING_NAMES, default_text, env_var_name, setting_flags, setting_help,
                       setting_metadata)


def _cell(text: str) -> str:
    """Markdown table text: rich's escaped `\\[` shown as `[`, pipes escaped."""
    return text.replace("\\[", "[").replace("|", "\\|")


def settings_table() -> str:
    """One row per setting, grouped as --help groups them: YAML key, flags, variable, default, help."""
    rows = ["| setting (YAML key) | flags | variable | default | what it is |", "|---|---|---|---|---|"]
    for group in GROUPS:
        for name in SETTING_NAMES:
            meta = setting_metadata(name)
            if meta["group"] != group:
                continue
            flags = ", ".join(f"`{flag}`" for flag in setting_flags(name))
            rows.append(f"| `{name}` | {flags} | `{env_var_name(name)}` | {_cell(default_text(name))} | "
                        f"{group.lower()}: {_cell(setting_help(name) + meta['hint'])} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(settings_table(), end="")
