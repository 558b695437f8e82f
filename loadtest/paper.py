"""The paper's reference figures, as data: Table 2 of "Power Hungry Processing" and the task-name mapping.

Source: Alexandra Sasha Luccioni, Yacine Jernite, Emma Strubell, "Power Hungry Processing: Watts Driving the Cost
of AI Deployment?", ACM FAccT 2024, arXiv:2311.16863, Table 2 ("mean and standard deviation of energy per 1,000
queries for the ten tasks examined in our analysis"). Measured with CodeCarbon 2.3.1 in machine mode on one AWS
node (8 x A100-SXM4-80GB, all eight GPUs, CPU and RAM counted), 1,000 sequential unbatched queries per model and
dataset, 10 repetitions; the mean is over each task's models and datasets. Raw data: github.com/sashavor/co2_inference.
"""

from __future__ import annotations

from dataclasses import dataclass

CITATION = ("Luccioni, Jernite & Strubell, \"Power Hungry Processing: Watts Driving the Cost of AI Deployment?\", "
            "FAccT 2024 (arXiv:2311.16863), Table 2")


@dataclass(frozen=True)
class PaperValue:
    """One row of Table 2: energy per 1,000 inferences in kWh (mean and standard deviation)."""

    paper_task: str
    kwh_per_1000: float
    sd_kwh_per_1000: float


# Table 2, in the paper's order (ascending energy)
TABLE2: dict[str, PaperValue] = {v.paper_task: v for v in (
    PaperValue("text classification", 0.002, 0.001),
    PaperValue("extractive QA", 0.003, 0.001),
    PaperValue("masked language modeling", 0.003, 0.001),
    PaperValue("token classification", 0.004, 0.002),
    PaperValue("image classification", 0.007, 0.001),
    PaperValue("object detection", 0.038, 0.02),
    PaperValue("text generation", 0.047, 0.03),
    PaperValue("summarization", 0.049, 0.01),
    PaperValue("image captioning", 0.063, 0.02),
    PaperValue("image generation", 2.907, 3.31),
)}

# wattserve / Hugging Face pipeline task name -> the paper's task name (None: the paper has no such task)
TASK_TO_PAPER: dict[str, str | None] = {
    "feature-extraction": None,
    "text-classification": "text classification",
    "question-answering": "extractive QA",
    "fill-mask": "masked language modeling",
    "token-classification": "token classification",
    "image-classification": "image classification",
    "object-detection": "object detection",
    "text-generation": "text generation",
    "summarization": "summarization",
    "image-to-text": "image captioning",
    "text-to-image": "image generation",
}


def paper_value(task: str) -> PaperValue | None:
    """Table 2's row for a wattserve task name, or None when the paper did not measure that task."""
    name = TASK_TO_PAPER.get(task)
    return TABLE2[name] if name is not None else None


def task_order(task: str) -> tuple[int, str]:
    """Sort key: tasks without a Table 2 row first, then the paper's order (ascending energy), then by name."""
    name = TASK_TO_PAPER.get(task)
    if task in TASK_TO_PAPER and name is None:
        return (0, task)
    if name is not None:
        return (1 + list(TABLE2).index(name), task)
    return (len(TABLE2) + 1, task)


__all__ = ["CITATION", "PaperValue", "TABLE2", "TASK_TO_PAPER", "paper_value", "task_order"]
