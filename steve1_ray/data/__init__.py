"""Dataset generation: contractor recordings -> frames, actions, MineCLIP embeddings -> Parquet shards.

Public entry points:
    load_contractor_episode(video_path, jsonl_path, vpt_compat=False, cursor_image=None)
    steve1_ray.data.shards: read_manifest, list_episodes, load_episode, iter_segments (the reader)
    steve1_ray.data.sampling: create_sampling, read_sampling
    steve1_ray.data.pipeline: DataConfig, generate_dataset, main (the Ray Data job)
"""
from steve1_ray.data.contractor import ContractorEpisode, EpisodeError, load_contractor_episode

__all__ = ["ContractorEpisode", "EpisodeError", "load_contractor_episode"]
