"""The networks, the diffusion schedule and samplers, and the checkpoint format.

Pure torch: nothing here imports Celery, HTTP code or the training package.
"""
