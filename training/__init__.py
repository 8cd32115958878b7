"""Fine-tuning of the mention-to-code encoder."""
