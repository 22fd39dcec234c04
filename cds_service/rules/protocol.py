"""The decision table (protocol §3): `evaluate(record, knowledge, as_of) -> Decision`.

Pure: no I/O, no clock. Rules are checked in order and the first that matches decides.
Missing data never leads to ESCALATE (§3a): blocking gaps give INSUFFICIENT_DATA, the others cap
the outcome at CONSIDER.
"""

from __future__ import annotations

from datetime import date

from cds_service.facts.patient_record import PatientRecord
from cds_service.facts.plausible_dates import plausible_record
from cds_service.knowledge.indexed import Knowledge
from cds_service.rules import bmd
from cds_service.rules.decision import Decision
from cds_service.rules.eligibility import (
    rule_anabolic,
    rule_demographics,
    rule_duration,
    rule_first_line,
    rule_high_risk,
    rule_malignancy,
    rule_very_high_risk,
)
from cds_service.rules.evaluation import Evaluation, Finished
from cds_service.rules.response import rule_followup, rule_holiday_and_adherence, rule_response
from cds_service.rules.treatment import rule_secondary_causes, rule_treatment


def _run(ev: Evaluation) -> Decision:
    rule_demographics(ev)  # R0, R0b, R1 (+ the independent warnings)
    rule_malignancy(ev)  # R2
    rule_anabolic(ev)  # R3, R3c
    rule_very_high_risk(ev)  # R4
    rule_high_risk(ev)  # R5
    start = rule_first_line(ev)  # R6
    rule_duration(ev, start)  # R7
    scans = bmd.group_scans(ev.r.bmd, ev.as_of)
    fresh = rule_followup(ev, start, scans)  # R7f
    th_followup, _ = bmd.followup_scan(fresh, "total_hip", bmd.baseline_scan(scans, "total_hip", start, ev.k))
    rule_holiday_and_adherence(ev, start, (th_followup or fresh[-1]).date)  # R7h, R7a
    th, ls, followup = rule_response(ev, start, scans, fresh)  # R8
    flags = rule_secondary_causes(ev)  # R9a (decides), R9b/R9c (flags)
    return rule_treatment(ev, th, ls, followup, flags)  # R10, renal gate, R11, R12, R13


def evaluate(record: PatientRecord, knowledge: Knowledge, as_of: date) -> Decision:
    """Apply the protocol to one patient's record on `as_of`."""
    ev = Evaluation(plausible_record(record, as_of), knowledge, as_of)
    try:
        return _run(ev)
    except Finished as finished:
        return finished.decision
