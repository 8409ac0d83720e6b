"""An AMGAN run's configuration: the methods' presets and every value a run needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amgan_search.errors import UserError
from amgan_search.nets import UPSAMPLE, UPSAMPLINGS
from amgan_search.nets.amgan import ATTENTIONS
from amgan_search.train.checks import SEED_MAX, TRAIN_SIZES, choice, number, whole
from amgan_search.train.diffaug import POLICIES

# Each method: where alpha comes from, what guides it, and which of D_C / L_p it uses.
# attention: generator | none | separate (SaGAN's network) | cam (the CAM is alpha)
# attention_loss: cam (L_a, L1 to the CAM) | mask (GANimation's regulariser) | none
PRESETS: dict[str, dict[str, Any]] = {
    "amgan": dict(attention="generator", attention_loss="cam", use_dc=True, use_perceptual=True),
    "stargan": dict(attention="none", attention_loss="none", use_dc=False, use_perceptual=False),
    "ganimation": dict(attention="generator", attention_loss="mask", use_dc=False,
                       use_perceptual=False),
    # SaGAN's losses are adversarial, classification and reconstruction: no mask term (our reading).
    "sagan": dict(attention="separate", attention_loss="none", use_dc=False, use_perceptual=False),
    "no-dc": dict(attention="generator", attention_loss="cam", use_dc=False, use_perceptual=True),
    "no-perceptual": dict(attention="generator", attention_loss="cam", use_dc=True,
                          use_perceptual=False),
    "no-attention-loss": dict(attention="generator", attention_loss="none", use_dc=True,
                              use_perceptual=True),
    "cam-as-mask": dict(attention="cam", attention_loss="none", use_dc=True, use_perceptual=True),
}

# Counts, periods and widths that must be positive; weights that must not be negative.
_AT_LEAST_ONE = ("iters", "batch_size", "n_critic", "sample_every", "ckpt_every", "log_every",
                 "g_conv_dim", "att_conv_dim", "d_conv_dim")
_LAMBDAS = ("lambda_cls", "lambda_cyc", "lambda_a", "lambda_p", "lambda_gp", "lambda_mask",
            "lambda_cls_fake", "lambda_alpha_binary")
ATTENTION_LOSSES = ("cam", "mask", "none")
# Which critics are told the values they judge an image under (`Discriminator`, conditional).
CONDITIONAL_CRITICS = ("none", "dc", "all")
# Which pixels L_cyc asks G(G(x, m_target), m_original) to give back (`losses.cycle_loss`).
CYCLE_REGIONS = ("all", "kept")


@dataclass
class AmganConfig:
    """Everything a run needs; written next to its outputs as train_config.json."""

    db: str | None = None                 # catalog DB to train on
    out: str = "runs/amgan"
    classifier: str | None = None         # CNN+CAM model dir; None -> shipped classifier-cam
    method: str = "amgan"                 # a key of PRESETS
    split: str | None = "train"
    size: int = 64
    iters: int = 20000                    # D updates (StarGAN's counting)
    batch_size: int = 16                  # per process
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_critic: int = 5
    lambda_cls: float = 1.0
    lambda_cyc: float = 10.0
    lambda_a: float = 10.0
    lambda_p: float = 20.0                # 10 on Shopping100k
    lambda_gp: float = 10.0
    lambda_mask: float = 0.1              # GANimation's mask weight; our TV term is a mean
    # Our option where the paper trains D's classification head on real images only (0: the
    # paper). The generator's edits are adversarial examples for a head that never sees them:
    # it reads them as the target more often than the true edits and accepts nearly all that
    # keep the sleeves (experiments/d_probe.py). With a weight here the head also
    # learns to read each edit as the photo it came from, so L_cls is paid only by edits the
    # head cannot tell from a real photo of the target.
    lambda_cls_fake: float = 0.0
    # Our option where the paper's critics are unconditional ("none"): "dc" tells D_C, "all" D_I
    # and D_C, the values each image is judged under (a real photo: its own; an edit: the
    # target). A critic that is not told the target can call a sleeve kept on an arm meant to be
    # bare real, since real photos have sleeves; one that is told it has seen no such photo.
    # Measured from scratch to 4,500 iterations: sleeve truth within noise, colour truth -0.03,
    # and D_C still finds the kept sleeves no less real (docs/experiments.md): off.
    conditional_critic: str = "none"
    # Our option where the paper's L_cyc asks for every pixel back ("all"): "kept" weighs each
    # pixel by 1 - alpha of the forward edit (held fixed), so the cycle asks back only what the
    # edit left alone. A sleeve taken away must be redrawn, in its colour and pattern, by the
    # way back; the cheapest way to pay "all" is to leave it under a half-open alpha, where the
    # way back still sees it. Measured from scratch to 5,000 iterations: shortening unchanged
    # (docs/experiments.md): off.
    cycle_region: str = "all"
    # Our option, 0 in the paper: lambda * mean(4 alpha (1 - alpha)) pushes alpha to 0 or 1, so
    # what an edit opens shows z alone, not z over the photo (a sleeve seen through a smear).
    # Measured at 10 from scratch to 4,000 and 5,000 iterations: preservation about halved,
    # shortening +0.108 and +0.081, sleeve truth 0.407 and 0.380 (docs/experiments.md);
    # one run: off.
    lambda_alpha_binary: float = 0.0
    # Our option, none in the paper (()): random transforms (`train.diffaug.POLICIES`) in front
    # of D_I and D_C for photos and edits alike, in both updates (DiffAugment), so that L_cls is
    # not paid by smears tuned to one view of the pixels. Measured from scratch: D_I's head
    # still accepts nearly every sleeve edit the truth rejects; translation,cutout costs colour;
    # blur over 10,000 iterations gains +0.07 sleeve truth on the test scenes, in the edits that
    # add fabric, and none on the validation scenes (docs/experiments.md): off.
    diff_augment: tuple[str, ...] = ()
    perceptual_conv5: bool = True         # False: avg-pool features only (Shopping100k)
    # conv5 maps finer than this are average-pooled to it for L_p. Our choice: the paper's
    # ResNet-50 at 128 px has 4x4 conv5 maps; the reference is another person in another pose on
    # another background, and finer maps (8x8 from our stride-8 CNN) would ask x* to copy more of
    # that layout. 0 keeps the maps as they are.
    perceptual_grid: int = 4
    # The 64x64 synthetic default, sized to this kind of CPU (DESIGN, "Measured"): StarGAN's
    # 64/6 generator and 64-wide D are ~20x slower at 128x128 and do not fit a CPU budget. The
    # shipped models use StarGAN's widths at 64x64, trained on a GPU (see their model cards).
    g_conv_dim: int = 32
    g_repeat_num: int = 3
    att_conv_dim: int = 16                # SaGAN's separate attention network
    g_upsample: str = UPSAMPLE            # nets.UPSAMPLINGS: "deconv" is StarGAN's
    d_conv_dim: int = 32
    d_repeat_num: int = 5                 # 64 -> 2; D_C has 2 fewer layers on half-size crops
    attention: str | None = None          # None: from the method's preset
    attention_loss: str | None = None
    use_dc: bool | None = None
    use_perceptual: bool | None = None
    augment: bool = False
    sample_every: int = 1000
    ckpt_every: int = 1000
    log_every: int = 50
    seed: int = 0
    workers: int = 0
    # CPU threads for torch (None: torch's default). On a CPU that other jobs share, one thread
    # per process avoids OpenMP threads waiting on each other (measured up to 15x slower).
    threads: int | None = None
    device: str = "auto"
    # bf16 autocast; None: on where the hardware does bf16 natively (bf16_pays). Measured at 64x64,
    # batch 16, on a 2-core AVX512-BF16 CPU: 1.5-1.7x faster, losses within 1% of fp32 over 40
    # iterations. The gradient penalty always runs in fp32.
    bf16: bool | None = None
    channels_last: bool = False           # measured no faster on that CPU
    resume: bool = False
    # Stop after this iteration with a checkpoint and a model, the schedule still planned for
    # `iters` (time-boxed sessions; resuming with a later stop_at goes on).
    stop_at: int | None = None
    # Checkpoints picked by the truth (synthetic catalogs, `train.validation`): at every
    # checkpoint the generator's edits of this many unseen scenes are graded against the
    # renderer's true edits, logged to log.jsonl, and the best so far kept in best/.
    # 0: no validation.
    val_scenes: int = 0
    # The attributes validation scenes are drawn with (the training catalog's, e.g. the harder
    # setting's color,sleeve,pattern,neckline); None: the model's.
    val_scene_attributes: tuple[str, ...] | None = None
    progress: bool = True

    def __post_init__(self):
        if self.method not in PRESETS:
            raise UserError(f"unknown method {self.method!r}; valid: {', '.join(PRESETS)}")
        for key, value in PRESETS[self.method].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self._check_numbers()
        if self.size % 2 ** self.d_repeat_num:
            raise UserError(f"size {self.size} must be divisible by 2**d_repeat_num "
                            f"({2 ** self.d_repeat_num})")
        if self.size % 4:
            raise UserError(f"size {self.size} must be divisible by 4 (two down-samplings)")
        if self.g_upsample not in UPSAMPLINGS:
            raise UserError(f"g_upsample must be one of {', '.join(UPSAMPLINGS)}, "
                            f"got {self.g_upsample!r}")
        choice(self, "attention", ATTENTIONS)
        choice(self, "attention_loss", ATTENTION_LOSSES)
        choice(self, "conditional_critic", CONDITIONAL_CRITICS)
        choice(self, "cycle_region", CYCLE_REGIONS)
        self._check_diff_augment()
        if (self.cycle_region == "kept" or self.lambda_alpha_binary) and self.attention == "none":
            raise UserError(f"cycle_region 'kept' and lambda_alpha_binary need an attention mask, "
                            f"which method {self.method!r} does not have")
        if self.conditional_critic == "dc" and not self.use_dc:
            raise UserError(f"conditional_critic 'dc' needs D_C, which method {self.method!r} "
                            "does not use")
        if self.stop_at is not None and not 1 <= self.stop_at <= self.iters:
            raise UserError(f"stop_at {self.stop_at} must be between 1 and iters ({self.iters})")

    def _check_diff_augment(self) -> None:
        if isinstance(self.diff_augment, str) or not isinstance(self.diff_augment, (tuple, list)):
            raise UserError(f"diff_augment must be a list of {', '.join(POLICIES)}, "
                            f"got {self.diff_augment!r}")
        unknown = [p for p in self.diff_augment if p not in POLICIES]
        if unknown:
            raise UserError(f"unknown diff_augment policy {unknown[0]!r}; "
                            f"valid: {', '.join(POLICIES)}")
        self.diff_augment = tuple(self.diff_augment)

    def _check_numbers(self) -> None:
        """Types and ranges, field by field (the command line's click ranges say the same)."""
        whole(self, ("size",), *TRAIN_SIZES)
        whole(self, _AT_LEAST_ONE, 1)
        whole(self, ("d_repeat_num",), 3, 10)
        whole(self, ("g_repeat_num",), 0, 64)
        whole(self, ("perceptual_grid", "workers", "val_scenes"), 0)
        whole(self, ("seed",), 0, SEED_MAX)
        whole(self, ("threads",), 1, optional=True)
        whole(self, ("stop_at",), 1, optional=True)
        number(self, ("lr",), 0, above=True)
        number(self, ("beta1", "beta2"), 0, 1, below=True)
        number(self, _LAMBDAS, 0)

    @property
    def end(self) -> int:
        """The iteration this invocation stops after."""
        return self.iters if self.stop_at is None else self.stop_at

    @property
    def use_bf16(self) -> bool:
        return bf16_pays(self.device) if self.bf16 is None else self.bf16

    @property
    def needs_classifier(self) -> bool:
        return self.attention_loss == "cam" or self.use_perceptual or self.attention == "cam"


def bf16_pays(device: str = "auto") -> bool:
    """Whether bf16 autocast is native where training runs (`device.native_bf16`: a CUDA GPU with
    bf16, a CPU with AVX512-BF16 or AMX; emulated bf16 is slower than fp32)."""
    from amgan_search.device import native_bf16, pick_device

    try:
        return native_bf16(pick_device(device))
    except UserError:  # a device this machine lacks is refused where the run starts
        return False


def preset(method: str, **overrides) -> AmganConfig:
    """A config for one of the paper's methods, e.g. preset("stargan", iters=1000)."""
    return AmganConfig(method=method, **overrides)
