"""The chem task pack: real drug-discovery task types (`rdkit-props`, `admet-ai`, `vina`) for the agent.

Installed with the `chem` extra (`pip install 'aidd[chem]'`, after a torch of your choice) and registered
through the `aidd.task_types` entry point (`toolkit.tasks`); the agent itself imports none of it. Each task
takes a list of molecules and returns one row per molecule, so a campaign's results gather into one table
(`aidd results`).
"""
