"""Fuzzing of vhdtool's reading side: a harness that runs every entry point on one image, file mutations,
and the long campaign (``python benchmarks/fuzz_campaign.py --minutes N``)."""
