"""The pure planner: what a group needs next, decided from values alone.

Everything here is synchronous, deterministic and free of I/O: the spec's grammar and hash
(``spec``, ``fields``, ``hashing``), health judgement (``health``), backoff as data (``memory``,
``outcomes``), the step and its actions (``step``, ``pets``, ``actions``, ``plan``) and InfraKit's
texts (``summary``). Time is an argument. It imports ``spi`` (and ``durations``) only, a rule
``make lint`` checks; the code that acts on a plan is one folder up (``group.supervisor``,
``group.controller``).
"""
