"""The paper's "linear fine-tuning" model: a frozen backbone's last residual blocks, mixed by trained vectors.

Zhang & Bottou compare fine-tuning with a model that is linear in what it trains: the pooled outputs φ of
the last three residual blocks, combined as Σ v ⊙ φ, then the linear head; only the vectors v and the head
train, the backbone stays frozen (backbone weights and BatchNorm statistics). droptune keeps its head,
Dropout(p) → Linear, on the combination, so the rate is a choice here as everywhere.
"""

from __future__ import annotations

import torch
from torch import nn

from droptune.errors import DroptuneError
from droptune.models.model import DropoutClassifier


def _block_types() -> tuple[type, ...]:
    """Module classes that always hold a shortcut: ResNet blocks (torchvision, timm), transformer and ConvNeXt
    blocks (timm)."""
    from timm.models import convnext, resnet as timm_resnet, vision_transformer
    from torchvision.models import resnet

    return (resnet.BasicBlock, resnet.Bottleneck, timm_resnet.BasicBlock, timm_resnet.Bottleneck,
            vision_transformer.Block, convnext.ConvNeXtBlock)


def residual_blocks(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone's residual blocks in forward order. EfficientNet and MobileNet blocks (timm) count only
    where they add their input back (`has_skip`): a block that changes the width or the stride has no shortcut."""
    types = _block_types()
    return [(name, module) for name, module in backbone.named_modules()
            if isinstance(module, types) or getattr(module, "has_skip", False) is True]


def _pool(output: torch.Tensor, backbone: nn.Module) -> torch.Tensor:
    """A block's output pooled as the backbone pools its last one: a ViT's tokens and a ConvNeXt's maps through
    the backbone's own final norm and pooling (timm's `forward_head`), other maps averaged over space."""
    from timm.models import convnext

    if output.dim() == 3 and hasattr(backbone, "forward_head") and hasattr(backbone, "norm"):
        return backbone.forward_head(backbone.norm(output), pre_logits=True)
    if output.dim() == 4 and isinstance(backbone, convnext.ConvNeXt):
        return backbone.forward_head(backbone.norm_pre(output), pre_logits=True)
    if output.dim() == 4:
        return output.mean(dim=(2, 3))
    raise DroptuneError(f"cannot pool a residual block's output of shape {tuple(output.shape)}: expected "
                        "N×C×H×W maps or the tokens of a timm ViT")


def block_outputs(backbone: nn.Module, blocks: list[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """The pooled outputs of `blocks` for the (normalized) images `x`, from one pass of the backbone without
    gradients. The hooks live for this pass only, so copies of a model (averages, EMA) hold none."""
    outputs: list[torch.Tensor] = []
    hooks = [block.register_forward_hook(lambda _block, _input, output: outputs.append(output)) for block in blocks]
    try:
        with torch.no_grad():
            backbone(x)
    finally:
        for hook in hooks:
            hook.remove()
    return [_pool(output, backbone) for output in outputs]


class BlockFeaturesClassifier(DropoutClassifier):
    """`Dropout(p) → Linear` on Σ_i v_i ⊙ φ_i over the pooled outputs φ_i of the backbone's last `blocks`
    residual blocks; the backbone is frozen and always in eval mode.

    v starts as 1 for the last block and 0 for the others: before training, the head sees the last block's
    pooled features (for a ResNet, a ViT or a ConvNeXt, the network's own penultimate features).
    """

    def __init__(self, model: DropoutClassifier, blocks: int, image_size: int):
        found = residual_blocks(model.backbone)
        if not found:
            raise DroptuneError(f"linear_blocks: {type(model.backbone).__name__} has no residual block droptune "
                                "knows (ResNet, EfficientNet/MobileNet, ViT or ConvNeXt blocks)")
        if blocks > len(found):
            raise DroptuneError(f"invalid linear_blocks = {blocks}: the backbone has {len(found)} residual blocks")
        chosen = found[-blocks:]
        model.backbone.eval()
        probe = torch.zeros(1, 3, image_size, image_size, device=model.input_mean.device)
        widths = [pooled.shape[1] for pooled in block_outputs(model.backbone, [m for _, m in chosen], probe)]
        if len(set(widths)) > 1:
            names = ", ".join(f"{n} ({w})" for (n, _), w in zip(chosen, widths))
            raise DroptuneError(f"invalid linear_blocks = {blocks}: the backbone's last {blocks} residual blocks "
                                f"have different widths, {names}, and their sum needs one; choose fewer blocks")
        super().__init__(model.backbone, widths[0], model.num_classes, model.dropout, model.freeze_bn,
                         model.mean, model.std)
        self.block_names = [name for name, _ in chosen]
        self.blocks = [module for _, module in chosen]
        self.backbone.requires_grad_(False)
        start = torch.zeros(blocks, widths[0])
        start[-1] = 1.0
        self.block_weights = nn.Parameter(start)
        self.to(model.input_mean.device)
        self.train(model.training)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.stack(block_outputs(self.backbone, self.blocks, self.normalize(x)), dim=1)
        return (self.block_weights.to(pooled.dtype) * pooled).sum(dim=1)

    def train(self, mode: bool = True) -> BlockFeaturesClassifier:
        super().train(mode)
        self.backbone.eval()  # frozen: its BatchNorm statistics and any dropout or drop-path inside it too
        return self
