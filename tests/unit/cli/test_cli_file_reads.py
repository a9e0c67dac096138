"""Every file the command line reads from a path the user gave is a regular file within its cap (issue 15, D13):
`accord verify /dev/zero` exits 2 with the reason (it was MemoryError and exit 1), a FIFO is refused at once (it
hung), an oversize file exits 2; the same for the mesh file, the question file, a key file shown, an A2A card and
an outcome log. The commands run as subprocesses with their memory capped and a timeout, so a command that reads
without bound or blocks fails the test instead of taking the machine or the run with it."""

from __future__ import annotations

import os
from pathlib import Path

from accord.bus.server import free_port
from accord.files import MAX_FILE_BYTES
from tests.support.cli import ONE_AGENT, bounded, run_all
from tests.support.paths import SPEC_DIR

VEC = SPEC_DIR / "vectors" / "security"
VEC_NOW = "1750000000000000000"


def test_files_that_are_no_regular_file_or_too_large_exit_2_with_the_reason(tmp_path: Path) -> None:
    for name in ("verify", "output", "trust", "mesh", "question", "card", "log", "import"):
        os.mkfifo(tmp_path / f"{name}.fifo", 0o600)  # one each: a FIFO nobody writes to
    oversize = tmp_path / "oversize.json"
    with oversize.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse
    (tmp_path / "mesh.toml").write_text(ONE_AGENT, encoding="utf-8")
    closed = f"nats://127.0.0.1:{free_port()}"
    trust, attestation = str(VEC / "trust.json"), str(VEC / "attestation.dsse.json")
    answer = str(VEC / "attestation.output.txt")
    verify = ["verify", "--at-ns", VEC_NOW]
    cases = {
        "verify_dev_zero": [*verify, "/dev/zero", "--trust", trust],
        "verify_fifo": [*verify, "verify.fifo", "--trust", trust],
        "verify_oversize": [*verify, str(oversize), "--trust", trust],
        "verify_output_fifo": [*verify, attestation, "--trust", trust, "--output", "output.fifo"],
        "verify_trust_fifo": [*verify, attestation, "--trust", "trust.fifo"],
        "up_mesh_fifo": ["up", "mesh.fifo", "--nats", closed],
        "ask_question_fifo": ["ask", "--file", "question.fifo", "--mesh", "mesh.toml", "--nats", closed],
        "keys_show_dev_zero": ["keys", "show", "/dev/zero"],
        "card_import_fifo": ["interop", "card", "--import", "card.fifo"],
        "router_train_fifo": ["router", "train", "log.fifo", "-o", "router.msgpack"],
        "router_import_csv_fifo": ["router", "import", "import.fifo", "-o", "imported.jsonl"],
        "router_import_dev_zero": ["router", "import", "/dev/zero", "-o", "imported.jsonl"],
        "router_import_not_json": ["router", "import", str(oversize), "-o", "imported.jsonl"],
        "verify_regular": [*verify, attestation, "--trust", trust, "--output", answer],
    }
    results = run_all(
        {name: (argv, tmp_path) for name, argv in cases.items()}, command=bounded(1 << 30), timeout_s=30
    )
    assert results.pop("verify_regular")[0] == 0, "a regular file within its cap is read as before"
    for name, (code, text) in results.items():
        assert "Traceback" not in text and "MemoryError" not in text, (name, text)
        assert code == 2, (name, code, text)
    expected = {
        "verify_dev_zero": "/dev/zero: not a regular file (a character device)",
        "verify_fifo": "verify.fifo: not a regular file (a FIFO)",
        "verify_oversize": "oversize.json: 16777217 bytes, larger than 16 MiB",
        "verify_output_fifo": "output.fifo: not a regular file (a FIFO)",
        "verify_trust_fifo": "trust.fifo: not a regular file (a FIFO)",
        "up_mesh_fifo": "mesh.fifo: cannot read the mesh file: not a regular file (a FIFO)",
        "ask_question_fifo": "question.fifo: not a regular file (a FIFO)",
        "keys_show_dev_zero": "/dev/zero: not a regular file (a character device)",
        "card_import_fifo": "card.fifo: not a regular file (a FIFO)",
        "router_train_fifo": "log.fifo: not a regular file (a FIFO)",
        "router_import_csv_fifo": "import.fifo: not a regular file (a FIFO)",
        "router_import_dev_zero": "/dev/zero: not a regular file (a character device)",
        "router_import_not_json": "oversize.json: ",
    }
    for name, reason in expected.items():
        assert reason in results[name][1], (name, results[name][1])
