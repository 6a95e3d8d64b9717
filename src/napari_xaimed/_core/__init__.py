"""The base every package uses: errors, progress and cancel, argument checks, the random-number
lock, provenance records, temporary stores, spawned processes and stepped library calls.

Nothing here imports another package of ours.
"""
