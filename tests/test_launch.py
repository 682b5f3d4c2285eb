"""launch_modal.py offline: key-only sshd, random Jupyter tokens, public-key checks, idle shutdown, the Modal box."""

import pytest

import launch_modal
from launch_modal import BoxConfig
from moderation.errors import UserError

PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHbq3yZ2bW9kZXJhdGlvbi10ZXN0LWtleS1vbmx5 me@laptop"


def sshd_options() -> dict[str, str]:
    lines = [line.split(None, 1) for line in launch_modal.sshd_config().splitlines() if line.strip()]
    return {key.lower(): value for key, value in lines}


class TestSsh:
    def test_sshd_accepts_public_keys_only(self):
        options = sshd_options()
        assert options["passwordauthentication"] == "no"
        assert options["kbdinteractiveauthentication"] == "no"
        assert options["permitemptypasswords"] == "no"
        assert options["permitrootlogin"] == "prohibit-password"
        assert options["authenticationmethods"] == "publickey"
        assert options["pubkeyauthentication"] == "yes"
        assert "password yes" not in launch_modal.sshd_config().lower()

    def test_public_key_is_read_and_checked(self, tmp_path):
        key = tmp_path / "id_ed25519.pub"
        key.write_text(PUBLIC_KEY + "\n")
        assert launch_modal.read_public_key(key) == PUBLIC_KEY

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
                "private",
            ),
            ("", "not an OpenSSH public key"),
            ("hunter2", "not an OpenSSH public key"),
            (f"{PUBLIC_KEY}\n{PUBLIC_KEY}\n", "not an OpenSSH public key"),
        ],
    )
    def test_anything_but_one_public_key_is_refused(self, tmp_path, content, message):
        key = tmp_path / "key"
        key.write_text(content)
        with pytest.raises(UserError, match=message):
            launch_modal.read_public_key(key)

    def test_missing_key_file_is_one_line(self, tmp_path):
        with pytest.raises(UserError, match="cannot read public key"):
            launch_modal.read_public_key(tmp_path / "nope.pub")

    def test_ssh_mode_needs_a_key(self):
        with pytest.raises(ValueError, match="--public-key"):
            BoxConfig(mode="ssh")

    def test_established_connections_are_counted_on_the_port(self):
        table = (
            "  sl  local_address rem_address   st tx_queue rx_queue\n"
            "   0: 00000000:0016 00000000:0000 0A 00000000:00000000\n"  # listening on 22
            "   1: 0100007F:0016 0200007F:D431 01 00000000:00000000\n"  # established on 22
            "   2: 0100007F:22B8 0200007F:D432 01 00000000:00000000\n"  # established on 8888
        )
        assert launch_modal.established_connections(table, 22) == 1
        assert launch_modal.established_connections(table, 8888) == 1
        assert launch_modal.established_connections(table.splitlines()[0], 22) == 0

    def test_box_stops_after_the_idle_timeout(self):
        now = [0.0]
        busy = iter([True, True, False, False, False, False, False, False])
        launch_modal.wait_until_idle(
            lambda: next(busy), 90, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)
        )
        assert now[0] == 2 * launch_modal.POLL_S + 90  # busy until t=60, then idle for 90 s


class TestJupyter:
    def test_token_is_random_and_long(self):
        tokens = {launch_modal.new_token() for _ in range(20)}
        assert len(tokens) == 20 and all(len(token) >= 40 for token in tokens)

    def test_command_has_no_password_and_no_token_in_argv(self):
        command = launch_modal.jupyter_command(idle_timeout_s=1200)
        assert command[:2] == ["jupyter", "lab"]
        assert not any("password" in arg.lower() or "token" in arg.lower() for arg in command)
        assert "--ServerApp.shutdown_no_activity_timeout=1200" in command
        assert "--MappingKernelManager.cull_idle_timeout=1200" in command


class TestModalBox:
    def test_box_function_is_built_offline(self):
        spec = launch_modal.box._spec_
        assert launch_modal.app.name == "grpo-moderation-box"
        assert spec.gpus == BoxConfig().gpu
        assert set(spec.volumes) == {"/cache", "/data", "/runs"}
        assert spec.secrets == []

    def test_options_follow_the_command_line(self):
        config = BoxConfig(mode="ssh", public_key=PUBLIC_KEY, gpu="H100", idle_timeout_s=600, timeout_s=3600)
        options = launch_modal.box_options(config)
        assert (options["gpu"], options["timeout"]) == ("H100", 3600)

    def test_entrypoint_validates_before_starting(self, tmp_path, capsys):
        with pytest.raises(SystemExit) as exit_info:
            launch_modal.main(mode="ssh")
        assert exit_info.value.code == 2 and "--public-key" in capsys.readouterr().err
        private = tmp_path / "id_ed25519"
        private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
        with pytest.raises(SystemExit):
            launch_modal.main(mode="ssh", public_key=str(private))
        assert "private key" in capsys.readouterr().err
