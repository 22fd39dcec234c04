"""The knowledge in use: the validated file plus its code tables, indexed once (look-ups are dict reads)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

from cds_service.knowledge.checks import check_readers
from cds_service.knowledge.code_tables import (
    BODY_SITE_MAP,
    SITE_MAP,
    MedicationCode,
    ObservationCode,
    code_mapping_digest,
    read_table,
    strength_mg,
)
from cds_service.knowledge.schema import (
    ICD10,
    ICD10CM,
    ICD_SYSTEMS,
    LOINC,
    PACKAGED_DIR,
    BrandSpec,
    KnowledgeError,
    KnowledgeModel,
)


def plain_number(value: Decimal | int) -> str:
    """A configured number as a card writes it: `3.0` -> `3`, `0.20` stays `0.20`, `-2.5` stays."""
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return str(int(value))
    return str(value)


class Knowledge:
    """The validated knowledge file plus indexed code tables. Immutable after construction."""

    def __init__(self, model: KnowledgeModel, digest: str, base_dir: Path) -> None:
        """`digest`: sha256 of the knowledge file's bytes; protocol_version also covers every code table
        file read and the code-side mappings (`_protocol_digest`)."""
        self.model = model
        self._table_digests: dict[str, str] = {}
        self.thresholds = model.thresholds
        self.windows = model.windows
        self.policy = model.policy
        self.texts = model.texts
        self._conditions: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._condition_display: dict[tuple[str, str], str] = {}
        self._icd_categories: dict[str, set[str]] = defaultdict(set)
        self.medications: dict[tuple[str, str], MedicationCode] = {}
        self.observations: dict[tuple[str, str], list[ObservationCode]] = defaultdict(list)
        self.body_sites: dict[tuple[str, str], str] = {}
        self.lateralities: dict[tuple[str, str], str] = {}
        self._load_tables(base_dir)
        self.protocol_version = f"{model.version}+{self._protocol_digest(digest)[:12]}"
        self.hpt_type: dict[tuple[str, str], str] = {
            (system, code): kind
            for kind, pairs in model.hyperparathyroidism_types.items()
            for system, code in pairs
        }
        self.concept_gap_lines = tuple(
            f"{gap.concept}: not checked, no code list" for gap in model.concept_gaps
        )
        check_readers(model, frozenset(m.ingredient for m in self.medications.values()))
        self.text_values: dict[str, str] = {
            name: plain_number(value)
            for section in (model.thresholds, model.windows)
            for name, value in section.model_dump().items()
        }

    def line(self, name: str, **values: str) -> str:
        """A line of `texts` with its threshold/window placeholders and the named `values` filled."""
        return self.texts.line(name, {**self.text_values, **values} if values else self.text_values)

    # ----- loading -------------------------------------------------------------------------
    def _protocol_digest(self, file_digest: str) -> str:
        """One sha256 over everything that can change a decision or a card: the knowledge file (thresholds,
        windows, code additions, card texts), each code table file it names, the code-side mappings."""
        parts = [f"knowledge:{file_digest}", f"mappings:{code_mapping_digest()}"]
        parts += [f"table:{name}:{digest}" for name, digest in sorted(self._table_digests.items())]
        return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()

    def _table_rows(self, base_dir: Path, table: str) -> list[dict[str, str]]:
        rel = self.model.code_tables[table]  # type: ignore[index]
        for folder in (base_dir, PACKAGED_DIR):
            path = (folder / rel).resolve()
            if path.is_file():
                stat = path.stat()
                table_file = read_table(path, stat.st_mtime_ns, stat.st_size)
                self._table_digests[table] = table_file.sha256
                rows = list(table_file.rows)
                break
        else:
            raise KnowledgeError(f"code table {table!r} not found: {rel}")
        for addition in self.model.code_additions:
            if addition.table == table:
                rows.extend(addition.rows())
        return rows

    def _load_tables(self, base_dir: Path) -> None:
        for row in self._table_rows(base_dir, "conditions"):
            key = (row["system"], row["code"])
            self._conditions[key].add(row["concept"])
            self._condition_display.setdefault(key, row["display"])
            if row["system"] in ICD_SYSTEMS and len(row["code"]) == 3:
                self._icd_categories[row["code"]].add(row["concept"])
        for row in self._table_rows(base_dir, "medications"):
            ingredient = row["ingredient"].split("/")[0]
            self.medications[(row["system"], row["code"])] = MedicationCode(
                ingredient=ingredient,
                role=row["role"],
                strength_mg=strength_mg(ingredient, row["strength"]),
                display=row["display"],
                form=row["form_route"],
            )
        for row in self._table_rows(base_dir, "observations"):
            key = (row["system"], row["code"])
            kind = row["kind"]
            if kind == "body_site":
                mapped = BODY_SITE_MAP.get(row["site"])
                if mapped:
                    self.body_sites[key] = mapped
                continue
            if kind == "laterality":
                self.lateralities[key] = row["site"]
                continue
            site_raw = row["site"].split(" ")[0]
            site, side = SITE_MAP.get(site_raw, ("other", None)) if site_raw else ("", None)
            entry = ObservationCode(kind=kind, site=site, side=side)
            if entry not in self.observations[key]:
                self.observations[key].append(entry)

    # ----- look-ups ------------------------------------------------------------------------
    def condition_concepts(self, system: str, code: str) -> frozenset[str]:
        """Concepts of a coding; ICD-10 and ICD-10-CM share three-character categories (§3b)."""
        found = set(self._conditions.get((system, code), ()))
        if system in ICD_SYSTEMS:
            other = ICD10CM if system == ICD10 else ICD10
            found |= self._conditions.get((other, code), set())
            found |= self._icd_categories.get(code[:3], set())
        return frozenset(found)

    def condition_display(self, system: str, code: str) -> str | None:
        return self._condition_display.get((system, code))

    def observation_codes(self, system: str, code: str) -> list[ObservationCode]:
        return self.observations.get((system, code), [])

    def codes_of_kinds(self, kinds: frozenset[str], system: str = LOINC) -> list[tuple[str, str]]:
        """(system, code) pairs of the observation table with one of `kinds`, in table order."""
        out: list[tuple[str, str]] = []
        for (sys_, code), entries in self.observations.items():
            if sys_ == system and any(e.kind in kinds for e in entries) and (sys_, code) not in out:
                out.append((sys_, code))
        return out

    def medication_names(self) -> dict[str, str]:
        """Name (lower case, single spaces) -> agent: ingredient names and brand/biosimilar names."""
        names: dict[str, str] = {}
        for agent, words in self.model.ingredient_names.items():
            for word in words:
                names[" ".join(word.lower().split())] = agent
        for brand in self.model.medication_brands:
            names.setdefault(" ".join(brand.brand.lower().split()), brand.ingredient)
        return names

    def brands_of(self, agent: str) -> list[BrandSpec]:
        return [brand for brand in self.model.medication_brands if brand.ingredient == agent]

    def dxa_codes(self) -> list[tuple[str, str]]:
        return self.codes_of_kinds(frozenset({"t_score", "bmd", "frax_mof", "frax_hip"}))

    def lab_codes(self) -> list[tuple[str, str]]:
        return self.codes_of_kinds(
            frozenset({"egfr", "calcium", "albumin", "alkaline_phosphatase", "vitamin_d_25oh", "pth"})
        )
