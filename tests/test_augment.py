"""Augmentation: joint spatial transforms, binary masks, seeded."""

import torch

from stroke_helpers.augment import paper_augmentation


def test_spatial_transforms_move_image_and_mask_together():
    aug = paper_augmentation(prob=1.0, seed=0)
    moved = 0
    for seed in range(8):
        mask = torch.zeros(1, 64, 64)
        mask[0, 20 + seed : 40, 15 : 35 + seed] = 1
        image = torch.cat([mask, torch.rand(2, 64, 64)])  # channel 0 is the mask itself
        aug.set_random_state(seed)
        out_image, out_mask = aug(image, mask)
        assert out_image.shape == (3, 64, 64) and out_mask.shape == (1, 64, 64)
        assert set(out_mask.unique().tolist()) <= {0.0, 1.0}
        # brightness and contrast change values, not where the edge of the object is
        edge = out_image[0] > out_image[0].amin() + 0.5 * (out_image[0].amax() - out_image[0].amin())
        agree = (edge == out_mask[0].bool()).float().mean()
        assert agree > 0.97
        moved += not torch.equal(out_mask, mask)
    assert moved == 8


def test_seeded_and_off_switch():
    image, mask = torch.rand(5, 32, 32), (torch.rand(1, 32, 32) > 0.8).float()
    aug = paper_augmentation(prob=0.5)
    aug.set_random_state(3)
    a = aug(image, mask)
    aug.set_random_state(3)
    b = aug(image, mask)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    none = paper_augmentation(prob=0.0)
    assert torch.equal(none(image, mask)[0], image)
