"""Names for upstream VideoLLaMA 2's magic numbers (upstream `videollama2/constants.py`)."""
from __future__ import annotations

#: Label value ignored by the loss; spliced feature positions carry it in training.
IGNORE_INDEX = -100

#: Placeholder ids that stand in the token stream where features are spliced. They are negative so
#: they can never collide with a vocabulary id; upstream never adds them to the tokenizer.
IMAGE_TOKEN_INDEX = -200
VIDEO_TOKEN_INDEX = -201
AUDIO_TOKEN_INDEX = -202

IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"
AUDIO_TOKEN = "<audio>"

MODAL_TOKEN_TO_INDEX = {IMAGE_TOKEN: IMAGE_TOKEN_INDEX, VIDEO_TOKEN: VIDEO_TOKEN_INDEX, AUDIO_TOKEN: AUDIO_TOKEN_INDEX}
MODAL_TO_TOKEN = {"image": IMAGE_TOKEN, "video": VIDEO_TOKEN, "audio": AUDIO_TOKEN, "text": ""}

#: Frame count when a checkpoint's config has no `num_frames` key (VideoLLaMA2-7B).
DEFAULT_NUM_FRAMES = 8
#: Upstream's cap in 1-frame-per-second mode (frames beyond it are dropped, not resampled).
MAX_FRAMES = 32

#: Audio: everything is resampled to 16 kHz mono and padded/cropped to 30 s before the fbank.
AUDIO_SAMPLE_RATE = 16000
AUDIO_WINDOW_SECONDS = 30
AUDIO_WINDOW_SAMPLES = AUDIO_SAMPLE_RATE * AUDIO_WINDOW_SECONDS
#: Audio of a video: pytorchvideo ConstantClipsPerVideoSampler(clip_duration=2, clips_per_video=8).
AUDIO_CLIP_SECONDS = 2
AUDIO_CLIPS_PER_VIDEO = 8
#: Kaldi fbank settings BEATs was trained with.
FBANK_NUM_MEL_BINS = 128
FBANK_FRAME_LENGTH_MS = 25
FBANK_FRAME_SHIFT_MS = 10
#: Frames of the fbank of one 30 s window (kaldi's snip_edges framing): 2998.
AUDIO_FBANK_FRAMES = 1 + (AUDIO_WINDOW_SAMPLES - AUDIO_SAMPLE_RATE * FBANK_FRAME_LENGTH_MS // 1000) // (
    AUDIO_SAMPLE_RATE * FBANK_FRAME_SHIFT_MS // 1000)
#: BEATs input normalisation (upstream BEATs.preprocess: (fbank - mean) / (2 * std)).
BEATS_FBANK_MEAN = 15.41663
BEATS_FBANK_STD = 6.55582

#: Llama-2's default system prompt, which upstream wraps in <<SYS>> for Mistral/Mixtral checkpoints.
LLAMA2_DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
    "while being safe.  Your answers should not include any harmful, unethical, racist, sexist, "
    "toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased "
    "and positive in nature.\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of "
    "answering something not correct. If you don't know the answer to a question, please don't "
    "share false information."
)
#: model_types for which upstream prepends the Llama-2 system message.
SYSTEM_MESSAGE_MODEL_TYPES = ("videollama2", "videollama2_mistral", "videollama2_mixtral")

#: Video-LLaMA (v1): BLIP-2 / CLIP pixel normalisation, frames per video and frame side of its demo.
V1_PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
V1_PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)
V1_NUM_FRAMES = 8
V1_IMAGE_SIZE = 224

#: The most frames per video vl2 accepts (a setting or a model config.json): upstream models use 8 or 16;
#: far more would not fit any GPU (each frame is hundreds of tokens) and aborts deep inside torch.
FRAMES_LIMIT = 512
