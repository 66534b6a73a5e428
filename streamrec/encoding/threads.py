"""Intra-op threads of torch and FAISS for this process."""

from __future__ import annotations


def limit_threads(n: int) -> None:
    """Give torch and FAISS ``n`` intra-op threads in this process.

    On small machines OpenMP spin-waits make more threads slower: parallelism comes from processes and batching.
    """
    import faiss
    import torch

    faiss.omp_set_num_threads(n)
    torch.set_num_threads(n)
