"""A tiny Stable Diffusion pipeline with random weights, built from configs and saved as a local folder.

Tests, benchmarks and offline demos use it to exercise the real diffusers loading and generation path
(``model_index.json``, safetensors, a CLIP tokenizer written here) without the model hub. Its images
are noise-like: it shows that the plumbing works, not what Stable Diffusion draws. ``realistic=True``
builds the UNet with Stable Diffusion 1.5's layout (still random weights) for throughput benchmarks.
Where this stops: no training, no downloads.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import torch


def build_tiny_pipeline(folder: Path, *, realistic: bool = False, seed: int = 0) -> Path:
    """Save a StableDiffusionPipeline with random weights to ``folder``; returns the folder."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # 1. Models, seeded: the same folder every time.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_dim = 768 if realistic else 32
        if realistic:  # Stable Diffusion 1.5's UNet layout: about 860M parameters
            unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=text_dim)
            vae = AutoencoderKL(
                block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                latent_channels=4,
                layers_per_block=2,
                sample_size=512,
            )
        else:
            unet = UNet2DConditionModel(
                block_out_channels=(32, 64),
                layers_per_block=1,
                sample_size=16,
                in_channels=4,
                out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=text_dim,
                norm_num_groups=8,
                attention_head_dim=4,
            )
            vae = AutoencoderKL(
                block_out_channels=(16, 32),
                down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2,
                latent_channels=4,
                norm_num_groups=8,
                sample_size=32,
            )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
                hidden_size=text_dim,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=2,
                layer_norm_eps=1e-5,
                vocab_size=1000,
            )
        )
    # 2. A character-level CLIP tokenizer: letters and digits, each also as a word end.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + string.digits:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    tok_dir = folder / ".tokenizer-source"
    tok_dir.mkdir(exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77, pad_token="<|endoftext|>"
    )
    # 3. The pipeline, saved the way the hub's folders are laid out.
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe: Any = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder
