"""Convert an original score_sde checkpoint (yang-song/score_sde_pytorch) to a ScoreSDEPipeline folder.

    python scripts/convert_score_sde_checkpoint.py --checkpoint checkpoint_26.pth \\
        --config subvp/cifar10_ddpmpp_deep_continuous --output ./subvp-cifar10-ddpmpp-deep

Same as ``diffusers-sde convert``; see docs/models.md.
"""

from diffusers_sde.models.conversion import main

if __name__ == "__main__":
    main()
