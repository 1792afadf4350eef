"""The configuration and modeling files a serving directory carries (`auto_map`), copied there as they are.

They import only torch and transformers, never this project, so the directory loads wherever it is mounted.
"""
