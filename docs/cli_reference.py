"""Write docs/cli.md from the commands' own --help texts.

    python docs/cli_reference.py          # rewrite docs/cli.md
    python docs/cli_reference.py --check  # exit 1 if docs/cli.md is out of date

`tests/test_docs.py` runs the check, so the page cannot drift from the CLI.
"""
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from end2you_visual.cli.main import cli

PAGE = Path(__file__).resolve().parent / "cli.md"
WIDTH = 80
PYTHON = {
    "generate": ("`end2you_visual.generate.generate(source, out_dir, GenerateSettings(...))`",
                 "format.md"),
    "zoo": ("`end2you_visual.zoo`", "zoo.md"),
    "train": ("`end2you_visual.training.train(TrainConfig(...))`", "training.md"),
    "test": ("`end2you_visual.testrun.run_test(model, data_paths, out_dir)`", "predict.md"),
    "evaluate": ("`end2you_visual.postprocess.Chain.fit(...)`", "evaluation.md"),
    "predict": ("`end2you_visual.predict.predict_video(video, model, out_dir)`", "predict.md"),
    "extract": ("`end2you_visual.extract.extract_features(inputs, model, out_dir)`",
                "multimodal.md"),
}
INTRO = ("# The command line: `e2y-visual`\n\n"
         "Every command is a thin layer over a Python function (named under each command). "
         "`e2y-visual COMMAND --help` prints the same text. This page is written by "
         "`python docs/cli_reference.py`.\n")


def _commands(group, path=()):
    """(path, command) for the group and every command under it, depth first."""
    yield path, group
    if isinstance(group, click.Group):
        for name in group.list_commands(None):
            yield from _commands(group.get_command(None, name), path + (name,))


def _help(path):
    result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=WIDTH,
                                prog_name="e2y-visual")
    if result.exit_code != 0:
        raise RuntimeError(f"e2y-visual {' '.join(path)} --help failed: {result.output}")
    return result.output.rstrip()


def render():
    """The whole page as a string."""
    order = ["generate", "zoo", "train", "test", "evaluate", "predict", "extract"]
    sections = [INTRO]
    commands = sorted(_commands(cli), key=lambda pc: (order.index(pc[0][0]) if pc[0] else -1,
                                                      len(pc[0]), pc[0]))
    for path, _ in commands:
        sections.append(f"## {' '.join(('e2y-visual',) + path)}\n")
        if path:
            python, page = PYTHON[path[0]]
            sections.append(f"Python: {python}. See [{page}]({page}).\n")
        sections.append(f"```\n{_help(path)}\n```\n")
    return "\n".join(sections)


def main(argv):
    text = render()
    if "--check" in argv:
        if PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE} is out of date: run python docs/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
