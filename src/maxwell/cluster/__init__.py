"""Beyond one machine (issue 13): where a job runs, and the money that follows it.

- `placement`: the placement rule, pure: a price table in, nodes ranked out (no Ray in it, so a
  Kubernetes scheduler extender can use it too).
"""
