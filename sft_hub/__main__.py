"""``python -m sft_hub`` (and so ``accelerate launch -m sft_hub train recipe.yaml``)."""
from .cli import main

main()
