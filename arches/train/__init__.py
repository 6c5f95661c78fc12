"""Training: `arches.train.loop.train(cfg) -> metrics` and what it is made of.

    loop.py         train(cfg): plan -> open run -> fit -> record (no torch until the config is checked)
    fit.py          devices, the model and its speed settings, Lightning's Trainer, the outcome
    lit.py          the one LightningModule for every family
    checkpoints.py  atomic checkpoint IO and the periodic checkpoint callback
    resume.py       the run's name, config differences, an existing run to resume
    run_folder.py   the run folder's layout and files: config, model, weights, checkpoints
    record.py       run.json, the run's typed record (RunRecord)
    command.py      `arches train` and `arches train -m`

Nothing is imported here: `arches.train.record` stays as light as the index that reads it.
"""
