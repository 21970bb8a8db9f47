"""What the generation benchmarks (inference.py, openai_api.py) measure with: prompts and samples."""

from __future__ import annotations

from dataclasses import dataclass

MODEL = "smollm2-135m"
PROMPTS = [
    "Tell me a joke.",
    "What is the capital of France? Answer in one sentence.",
    "Write a haiku about the sea.",
    "Explain what a computer network is, briefly.",
    "Give me three tips for sleeping well.",
    "Describe a cat in two sentences.",
]


@dataclass
class Sample:
    """One generation: time to first token, completion tokens, whole duration, the text."""

    ttft_s: float
    tokens: int
    total_s: float
    text: str

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.total_s if self.total_s > 0 else 0.0
