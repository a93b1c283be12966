"""The job kinds by name: which module implements each, and which are batch submissions.

Plain names, importing nothing: the config checks a job's ``kind`` against them, and
``batchctl.jobs`` imports a kind's module from here when a run of it first needs it. A new kind
is one module under ``batchctl/jobs/`` that defines ``KIND``, named here.
"""

# A kind's name in the config -> the module whose ``KIND`` implements it.
KIND_MODULES = {
    "command": "batchctl.jobs.command",
    "python": "batchctl.jobs.python",
    "batch": "batchctl.jobs.openai",
    "openai": "batchctl.jobs.openai",  # the old name of "batch", kept as an alias
}
# The kinds whose runs are batch submissions (a job's ``provider`` says where they go).
BATCH_KINDS = ("batch", "openai")
