"""The one plan / run / summary loop of `sound2image generate`, for both model families.

``start`` turns inputs into jobs and seeds and refuses existing outputs before any work; ``begin`` reports
the inputs that failed and opens the :class:`Tally`; each family's command then runs its jobs through its
library runner (``diffusion.iter_images`` or ``transformer.runner.iter_images``), recording what it writes
and what fails; ``Tally.summary`` prints the counts and gives the exit status.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sound2image.cli.jobs import Plan, plan_jobs, report_skipped
from sound2image.errors import Sound2ImageError, UsageError


def start(
    inputs: Sequence[str],
    weights: Sequence[float] | None,
    mix: bool,
    seed: Sequence[int] | None,
    num_images: int,
) -> tuple[Plan, list[int]]:
    """The jobs of ``inputs`` (files skipped for their suffix reported as warnings) and the seeds."""
    plan = plan_jobs(inputs, weights, mix)
    report_skipped(plan)  # files a folder scan left out for their suffix: warnings, not failures
    from sound2image.seeds import expand_seeds

    return plan, expand_seeds(seed, num_images, on_repeat=lambda note: print(note, file=sys.stderr))


def check_free(out: Path, names: Sequence[str], suffixes: Sequence[str], overwrite: bool) -> None:
    """Refuse (OutputExistsError) any ``out/NAME+SUFFIX`` that exists, unless ``overwrite``."""
    from sound2image.outputs import resolve_output_path

    for name in names:
        for suffix in suffixes:
            resolve_output_path(out, f"{name}{suffix}", overwrite)


def begin(plan: Plan) -> Tally:
    """Print each input that failed, refuse a plan with nothing to generate, and open the run's tally."""
    problems = list(plan.problems)
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if not plan.jobs:
        raise UsageError(f"nothing to generate: {problems[0]}" if problems else "nothing to generate")
    return Tally(input_problems=problems)


def progress_bar(total: int) -> Any:
    """A tqdm bar counting images on stderr (hidden when stderr is not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="image", file=sys.stderr, disable=None, leave=False)


def drop_unreadable(plan: Plan, max_duration: float | None) -> Plan:
    """Move jobs whose audio fails a header check (missing, empty, not audio, too long) to the problems.

    Done before the model loads, so a bad file is reported as such even when weights are missing too,
    and no one waits minutes for weights to load only to learn that the input was unusable.
    """
    from sound2image.audio import probe_audio

    kept = Plan(problems=list(plan.problems))
    for job in plan.jobs:
        try:
            for path in job.audio:
                probe_audio(path, max_duration=max_duration or None)
        except Sound2ImageError as error:
            kept.problems.append(str(error))
        else:
            kept.jobs.append(job)
    return kept


#: What one image may fail with and the batch still go on: our own errors (an output that appeared
#: meanwhile, a bad setting), torch's (e.g. out of memory on one image) and the disk's.
IMAGE_ERRORS = (Sound2ImageError, RuntimeError, OSError)


@dataclass
class Tally:
    """What a run wrote and what failed, recorded as it happens (an error never loses the count).

    ``written`` holds every file that exists on disk because of this run (PNGs, contact sheets,
    ``.npy`` embeddings); ``input_problems`` the inputs that gave no image at all (unreadable audio, ...);
    ``image_problems`` single images that failed while the input's other images were made.
    """

    written: list[Path] = field(default_factory=list)
    inputs_with_images: set[str] = field(default_factory=set)
    input_problems: list[str] = field(default_factory=list)
    image_problems: list[str] = field(default_factory=list)

    def image_failed(self, name: str, seed: int, error: BaseException, bar: Any = None) -> None:
        """Record one failed image and show it on stderr (through the progress ``bar`` when there is one);
        ``name`` is the input's output name."""
        text = str(error) if isinstance(error, Sound2ImageError) else f"{type(error).__name__}: {error}"
        problem = f"{name} seed {seed}: {text}"
        self.image_problems.append(problem)
        if bar is not None:
            bar.write(f"failed: {problem}", file=sys.stderr)
        else:
            print(f"failed: {problem}", file=sys.stderr)

    def count_input(self, name: str, before: int) -> None:
        """Count input ``name`` as one that gave images when a PNG was written since ``len(written)``
        was ``before``."""
        if any(p.suffix == ".png" for p in self.written[before:]):
            self.inputs_with_images.add(name)

    def summary(self, total_inputs: int, out: Path) -> int:
        """Print what was written (PNG files counted on the list of files written) and what failed.

        Returns the exit status: 0, or 2 when any input or image failed.
        """
        images = sum(1 for p in self.written if p.suffix == ".png")
        made = len(self.inputs_with_images)
        print(f"wrote {images} image(s) to {out} from {made} of {total_inputs} input(s)")
        for problems, what in ((self.input_problems, "input(s)"), (self.image_problems, "image(s)")):
            if problems:
                print(f"{len(problems)} {what} failed:", file=sys.stderr)
                for problem in problems:
                    print(f"  {problem}", file=sys.stderr)
        return 2 if self.input_problems or self.image_problems else 0
