"""Practical tools built on the spectra: RoPE base feasibility and entropy patching.

Each tool is a functional core (``infospec.tools.<name>``) with a command-line shell
registered in :data:`infospec.cli._COMMAND_MODULES`.
"""
