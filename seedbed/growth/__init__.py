"""Staged growth (SPEC §4): the series plan and the growth operators on Llama state dicts."""
