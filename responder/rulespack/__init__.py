"""The Falco rules pack tooling: `serving-guard rules check` and `serving-guard rules test`.

Modules, each with one job:
  condition     parse and render Falco filter conditions (the libsinsp grammar), keeping positions
  rulesfile     read one rules YAML file into typed items and check them against Falco's format
  expand        Falco's loading semantics: define/append/override, lists, macros, exceptions
  evttypes      which event types a condition can match (Falco's evttype resolution)
  sysdig_compat the explicit allow-list of what 2022 libsinsp lacks, and the translation for sysdig
  sysdig        running Debian's sysdig: compile a filter, read a capture
  falco         `falco -V` when a Falco binary is on PATH
  policy        the Serving Guard house rules (tags, outputs, names) for the shipped pack
  check         the whole check of a set of rules files, as a report
  examples      the schema of rules/examples.yaml (examples per rule, expectations per capture)
  captures      evaluate the rules on recorded captures, attribute alerts to scenario actions
  matrix        judge alerts against the expectations and render the detection matrix
  scapedit      rewrite chosen events of a recorded capture (a derived capture)
  recorded      the recorded actions derived captures start from, and their rewrites
  derived       a derived case (rewrite + which rules must or must not fire), judged by sysdig
  evasions_*    the evasion cases, by rule family (evasion_cases gathers them)
  example_cases the examples file's rule examples as derived cases (or why one cannot be)
  derived_suite run derived cases on loaded rules, in parallel
  derived_report, derived_matrix  their verdicts and failures; the second section of `rules test`
  tuning_changes  which lines of the user's tuning files change a rule
"""
