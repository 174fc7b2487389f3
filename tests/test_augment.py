"""Augmentation: batched, one composed warp per slice, image and mask together, seeded."""

import torch

from stroke_helpers.augment import PaperAugmentation, paper_augmentation


def squares(b=8, size=64):
    masks = torch.zeros(b, 1, size, size)
    for i in range(b):
        masks[i, 0, 20 + i : 40, 15 : 35 + i] = 1
    images = torch.cat([masks, torch.rand(b, 2, size, size)], 1)  # channel 0 is the mask itself
    return images, masks


def test_spatial_transforms_move_image_and_mask_together():
    images, masks = squares()
    out_images, out_masks = paper_augmentation(prob=1.0, seed=0)(images, masks)
    assert out_images.shape == (8, 3, 64, 64) and out_masks.shape == (8, 1, 64, 64)
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
    for i in range(8):
        x = out_images[i, 0]  # brightness and contrast change values, not where the edge is
        edge = x > x.amin() + 0.5 * (x.amax() - x.amin())
        assert (edge == out_masks[i, 0].bool()).float().mean() > 0.97
        assert not torch.equal(out_masks[i], masks[i])  # every slice moved
        assert 0.5 < out_masks[i].sum() / masks[i].sum() < 2  # warped, not destroyed
    # each slice gets its own draw
    assert len({round(float(m.sum()), 1) for m in out_masks}) > 4


def test_each_transform_on_its_own_is_what_it_says():
    images, masks = squares(1)
    flip = PaperAugmentation(prob=1.0, shift=0, scale=0, degrees=0, elastic_px=0, grid_limit=0, optical=0)
    flipped, flipped_mask = flip(images, masks)  # only the two flips fire: a 180 degree turn
    assert torch.allclose(flipped, images.flip(-1, -2), atol=1e-4)
    assert torch.equal(flipped_mask, masks.flip(-1, -2))
    bright = PaperAugmentation(prob=1.0, shift=0.1, scale=0, degrees=0, elastic_px=0, grid_limit=0, optical=0)
    bright.generator.manual_seed(0)
    out, out_mask = bright(images, masks)
    delta = (out.flip(-1, -2) - images)[:, :, 1:-1, 1:-1]  # a constant shift of the image, not of the mask
    assert 0 < delta.abs().mean() <= 0.1 and delta.std() < 1e-4
    assert torch.equal(out_mask.flip(-1, -2), masks)


def test_seeded_and_off_switch():
    images, masks = torch.rand(4, 5, 32, 32), (torch.rand(4, 1, 32, 32) > 0.8).float()
    aug = paper_augmentation(prob=0.5)
    aug.set_random_state(3)
    a = aug(images, masks)
    aug.set_random_state(3)
    b = aug(images, masks)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = aug(images, masks)
    assert not torch.equal(a[0], c[0])
    none = paper_augmentation(prob=0.0)
    assert torch.equal(none(images, masks)[0], images)
