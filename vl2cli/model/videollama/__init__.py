"""Video-LLaMA (v1), the second model family: one file per component, like transformers' model folders.

- `files.py`            where each file is (folder / hub id / upstream eval YAML / env), no torch
- `checkpoint.py`       `.pth` reading through `torch.load(weights_only=True, mmap=True)` only
- `eva_vit.py`          EVA ViT-g as transformers' `Blip2VisionModel` (key renames) + fp32 `ln_vision`
- `qformer.py`          image / video / audio Q-Formers as transformers' `Blip2QFormerModel`
- `imagebind_audio.py`  ImageBind's audio encoder (vl2's own implementation)
- `language_model.py`   LLaMA-2-Chat / Vicuna as transformers' `LlamaForCausalLM`
- `prompt.py`           upstream's templates, messages and per-segment tokenisation
- `modeling.py`         `VideoLlamaV1`: the family interface over the shared `SplicedFamilyModel`
"""
