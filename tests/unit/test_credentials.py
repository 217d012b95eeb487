"""Credentials in broker URLs and the redaction of every output (tidings.credentials)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from tidings.credentials import for_service, redact, remember_secret, split_credentials
from tidings.observability.logs import setup_logging
from tidings.transport.errors import InvalidBrokerURL
from tidings.transport.kafka.config import KafkaSettings


def test_password_file_and_tls_become_credentials_and_leave_the_url(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret-from-file\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    url = f"kafka://order@h:9192?tls_ca={tmp_path}/ca.pem&password_file={tmp_path}/pw&linger_ms=5"
    credentials, bare = split_credentials(url)
    assert credentials.username == "order"
    assert credentials.password == "s3cret-from-file"  # one trailing newline dropped
    assert credentials.tls and credentials.tls_ca == f"{tmp_path}/ca.pem"
    assert bare == "kafka://h:9192?linger_ms=5"
    assert "s3cret" not in repr(credentials)


def test_password_env_is_read_and_a_missing_one_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDER_PW", "env-secret-1")
    credentials, _ = split_credentials("nats://order@h:4322?password_env=ORDER_PW")
    assert credentials.password == "env-secret-1" and not credentials.tls
    with pytest.raises(InvalidBrokerURL, match="environment variable NOPE_PW is not set"):
        split_credentials("nats://order@h:4322?password_env=NOPE_PW")


def test_a_password_in_the_url_is_refused_without_repeating_it() -> None:
    with pytest.raises(InvalidBrokerURL, match="password_env=VARIABLE") as caught:
        split_credentials("kafka://order:inline-pw-77@h:9192")
    assert "inline-pw-77" not in str(caught.value)


def test_bad_security_options_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidBrokerURL, match=r"tls_ca='/nope\.pem' is not a readable file"):
        split_credentials("kafka://h:9192?tls_ca=/nope.pem")
    with pytest.raises(InvalidBrokerURL, match="cannot be read"):
        split_credentials(f"kafka://u@h:9192?password_file={tmp_path}/missing")
    (tmp_path / "pw").write_text("x-secret")
    with pytest.raises(InvalidBrokerURL, match="needs a user name"):
        split_credentials(f"kafka://h:9192?password_file={tmp_path}/pw")


def test_kafka_settings_map_credentials_to_sasl_ssl_and_keep_them_out_of_repr(
    tmp_path: Path,
) -> None:
    (tmp_path / "pw").write_text("kafka-secret-9")
    (tmp_path / "ca.pem").write_text("x")
    settings = KafkaSettings.from_url(
        f"kafka://billing@h:9192?tls_ca={tmp_path}/ca.pem&password_file={tmp_path}/pw"
    )
    config = settings.common("c", lambda e: None)
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl.username"], config["sasl.password"]) == ("billing", "kafka-secret-9")
    assert settings.url == "kafka://billing@h:9192"
    assert "kafka-secret-9" not in repr(settings)


def test_service_placeholder_is_filled_per_service() -> None:
    url = "kafka://{service}@h:9192?password_file=/run/{service}.pw"
    assert for_service(url, "order") == "kafka://order@h:9192?password_file=/run/order.pw"


def test_redact_masks_url_passwords_secret_options_and_every_secret_read() -> None:
    remember_secret("remembered-secret-42")
    text = (
        "amqp://guest:guest@h:5672/ and postgresql://u:pg-pass@h/db?sslmode=require "
        "rdkafka.sasl.password=raw-pass&x=1 token: tok-123 saw remembered-secret-42 "
        "password_file=/run/p password_env=PW"
    )
    shown = redact(text)
    for secret in ("guest@", "pg-pass", "raw-pass", "tok-123", "remembered-secret-42"):
        assert secret not in shown, shown
    assert "amqp://guest:***@h:5672/" in shown
    assert "password_file=/run/p" in shown and "password_env=PW" in shown  # no secrets


def test_every_log_line_is_redacted_in_both_formats() -> None:
    remember_secret("log-secret-314")
    for log_format in ("text", "json"):
        out = io.StringIO()
        handler = setup_logging(log_format, "INFO", stream=out)
        try:
            logging.getLogger("t").warning("connecting with %s", "log-secret-314")
            try:
                raise RuntimeError("failed: kafka://u:url-pw-1@h")
            except RuntimeError:
                logging.getLogger("t").exception("boom")
        finally:
            logging.getLogger().removeHandler(handler)
        text = out.getvalue()
        assert "connecting with ***" in text
        assert "log-secret-314" not in text and "url-pw-1" not in text


def test_a_dead_letter_keeps_no_secret_of_its_error() -> None:
    # Dead letters stay on the broker and are shown by the dashboard and `tidings dlq show`.
    from tidings.reliability.deadletter import DeadLetterKind, DeadLetterReason, dead_letter
    from tidings.transport.base import Record

    record = Record("t", 0, 7, "k", b"{}", {}, 0.0)
    error = ConnectionError("postgresql://app:s3cret@db/x refused; password=hunter2")
    reason = DeadLetterReason(DeadLetterKind.RETRIES_EXHAUSTED, f"handler failed: {error}")
    out = dead_letter(record, "g", reason, error, attempts=3)
    shown = " ".join(out.headers.values())
    assert "s3cret" not in shown and "hunter2" not in shown
    assert "postgresql://app:***@db/x" in out.headers["dlq-error"]
