"""Imported only inside the data loaders' forkserver (``set_forkserver_preload`` in trainer/loop.py): it makes the
forkserver die with the training process, even on kill -9.

Without it a killed trainer leaves its forkserver and data workers behind (~1.5 GB each time): every worker holds
the forkserver's keep-alive pipe, and a worker's watchdog watches its own parent, the forkserver, which never dies.
With it the chain unwinds: the trainer dies → the kernel kills the forkserver → each worker, whose own
parent-death signal points at the forkserver (trainer/loop.py), is killed too.
"""
from core.host import die_with_parent

die_with_parent()
