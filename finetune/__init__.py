"""LoRA fine-tuning of the assistant's model on the organisation's own documents."""
