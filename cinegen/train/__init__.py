"""Training engine: transformer (LoRA, full fine-tune, from scratch) and VAE training.

config.py      strict YAML + dot-list dataclass configs (TrainConfig, VAETrainConfig)
data.py        manifests and importers, aspect x duration buckets, fps-aware frame sampling, samplers, packs
cache.py       VAE posterior moments and text embeddings on disk, keyed by content hashes
objectives.py  v-prediction (CogVideoX) and flow matching losses, timestep samplers (pure)
optim.py       AdamW, LR schedules, EMA
lora.py        peft LoRA, diffusers-format files, merge / unmerge
parallel.py    torchrun setup, DDP / FSDP2, activation checkpointing (applied from outside the model)
framepack.py   multi-resolution frame pack (block-diagonal attention)
checkpoint.py  self-describing checkpoints and exact resume
trainer.py     the transformer training loop;  vae_trainer.py + losses_vae.py: the VAE's
metrics.py     PSNR / SSIM / flicker, FLOPs and MFU;  progress.py: metrics.jsonl, TensorBoard, progress bar
plot.py, cli.py   `cinegen plot`, `cinegen train`, `cinegen train-vae`
"""
