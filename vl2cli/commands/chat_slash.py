"""`vl2 chat`'s slash commands: a line starting with `/` talks to vl2, never to the model."""
from __future__ import annotations

from dataclasses import dataclass

#: name -> (argument, what it does), in the order /help lists them
COMMANDS: dict[str, tuple[str, str]] = {
    "help": ("", "list these commands"),
    "file": ("PATH", "add a file (or a folder's media files) to the session"),
    "files": ("", "list the session's files"),
    "reset": ("", "forget the conversation (earlier questions and answers); the media stays encoded"),
    "quit": ("", "end the session (also /exit or Ctrl-D)"),
    "exit": ("", "end the session"),
}
#: Commands that need their argument.
NEEDS_ARGUMENT = ("file",)


@dataclass(frozen=True)
class SlashCommand:
    name: str
    argument: str

    @property
    def known(self) -> bool:
        return self.name in COMMANDS


def parse_slash(line: str) -> SlashCommand | None:
    """The command a line gives, or None for a question (any line not starting with `/`)."""
    if not line.startswith("/"):
        return None
    name, _, argument = line[1:].strip().partition(" ")
    return SlashCommand(name.lower(), argument.strip())


def help_text() -> str:
    width = max(len(f"/{name} {arg}".rstrip()) for name, (arg, _) in COMMANDS.items())
    rows = [f"  {f'/{name} {arg}'.rstrip():<{width}}  {what}" for name, (arg, what) in COMMANDS.items()]
    return "\n".join(["Any other line is a question about every file of the session. Commands:", *rows])
