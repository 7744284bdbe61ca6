"""gpu_skip.py — how the GPU checks say that they tested nothing.

Without a CUDA GPU (or without torch, which drives them) a GPU check cannot pass: it prints one
line "NAME: SKIPPED (why): nothing was tested" and exits with SKIP_EXIT (77, the automake
convention for a skipped test), so `make test-gpu` fails instead of looking like a pass.

  python3 tests/gpu/gpu_skip.py NAME   exit 0 when a CUDA GPU is visible to torch, else the
                                       SKIPPED line and SKIP_EXIT (the Makefile's gate)
"""
import sys

SKIP_EXIT = 77


def why_no_gpu():
    """None when torch sees a CUDA GPU, else the reason."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


def skip(name, why="no CUDA GPU"):
    """Print the SKIPPED line for NAME; returns SKIP_EXIT for the caller's exit status."""
    print(f"{name}: SKIPPED ({why}): nothing was tested", flush=True)
    return SKIP_EXIT


if __name__ == "__main__":
    why = why_no_gpu()
    sys.exit(0 if why is None else skip(sys.argv[1] if len(sys.argv) > 1 else "gpu", why))
