"""Writes a tiny random Llama reward model (LlamaForSequenceClassification, the GPT-2 vocabulary, a
score head with unit-scale weights so scores vary) with transformers, for tests that need a reward
model directory. Usage: make_random_rm.py DIR [SEED]"""
import sys

import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

torch.manual_seed(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
config = LlamaConfig(vocab_size=50257, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256, pad_token_id=50256,
                     num_labels=1)
model = LlamaForSequenceClassification(config)
with torch.no_grad():
    model.score.weight.normal_(0, 1.0)
model.save_pretrained(sys.argv[1], safe_serialization=True)
