"""launch_modal.py offline: key-only sshd, random Jupyter tokens and vLLM keys made locally, public-key checks, idle
shutdown, the upload deny-list, the Modal box."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import modal
import pytest
from modal.file_pattern_matcher import FilePatternMatcher

import launch_modal
from launch_modal import BoxConfig
from moderation.errors import UserError

PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHbq3yZ2bW9kZXJhdGlvbi10ZXN0LWtleS1vbmx5 me@laptop"
# A throwaway host key and what `ssh-keygen -lf` printed for it.
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP0P5wrYyKzsFMkYZyWvIrnoru+yLcUzPXXT5GHhapuF root@vm"
HOST_KEY_FINGERPRINT = "SHA256:op8U/uXOpp+mkNvu4OZv24QLwsnEz0LoRZvFcjNpGuY"


class LocalServer:
    """A real HTTP server on 127.0.0.1 answering GET `path` with `routes[path]()` -> (status, JSON-able body)."""

    def __init__(self, routes):
        self.headers: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.headers.append(dict(self.headers))
                status, body = routes[self.path]()
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def launched(monkeypatch):
    """Run `main` up to the point where Modal would start the box; record the options, secrets and config it sends."""
    sent: dict = {"secret_values": []}
    real_from_dict = modal.Secret.from_dict

    def from_dict(values):
        sent["secret_values"].append(dict(values))
        return real_from_dict(values)

    class Box:
        def with_options(self, **options):
            sent["options"] = options
            return self

        def remote(self, config_json):
            sent["config"] = json.loads(config_json)

    monkeypatch.setattr(modal.Secret, "from_dict", from_dict)
    monkeypatch.setattr(launch_modal, "box", Box())
    monkeypatch.setattr(launch_modal, "available_secrets", lambda names: [])
    return sent


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

    def test_host_key_fingerprint_is_what_ssh_keygen_shows(self):
        assert launch_modal.fingerprint(HOST_KEY) == HOST_KEY_FINGERPRINT
        line = launch_modal.known_hosts_line("r7.modal.host", 41234, HOST_KEY)
        assert line == "[r7.modal.host]:41234 " + " ".join(HOST_KEY.split()[:2])

    def test_box_stops_after_the_idle_timeout(self):
        now = [0.0]
        busy = iter([True, True, False, False, False, False, False, False])
        launch_modal.wait_until_idle(
            lambda: next(busy), 90, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)
        )
        assert now[0] == 2 * launch_modal.POLL_S + 90  # busy until t=60, then idle for 90 s

    def test_box_stops_when_its_server_exits(self):
        now = [0.0]
        checks = iter([False, False, True])
        launch_modal.wait_until_idle(
            lambda: True,
            3600,
            clock=lambda: now[0],
            sleep=lambda s: now.__setitem__(0, now[0] + s),
            stopped=lambda: next(checks),
        )
        assert now[0] == 2 * launch_modal.POLL_S


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

    def test_idle_kernels_are_culled_even_with_a_browser_tab_connected(self):
        command = launch_modal.jupyter_command(idle_timeout_s=1200)
        assert "--MappingKernelManager.cull_connected=True" in command
        assert not any("cull_busy=True" in arg for arg in command)  # a running training cell is never culled

    def test_open_kernels_and_terminals_keep_the_box_busy(self):
        token = "t" * 43
        lists = {"/api/kernels": [{"id": "k1"}, {"id": "k2"}], "/api/terminals": [{"name": "1"}]}
        with LocalServer({path: (lambda v=value: (200, v)) for path, value in lists.items()}) as server:
            assert launch_modal.jupyter_sessions(server.port, token) == 3
        assert all(h["Authorization"] == f"token {token}" for h in server.headers)
        with LocalServer({"/api/kernels": lambda: (200, []), "/api/terminals": lambda: (200, [])}) as server:
            assert launch_modal.jupyter_sessions(server.port, token) == 0
        with LocalServer({"/api/kernels": lambda: (403, {}), "/api/terminals": lambda: (200, "not json")}) as server:
            assert launch_modal.jupyter_sessions(server.port, token) == 0
        assert launch_modal.jupyter_sessions(server.port, token, timeout_s=1) == 0  # server gone

    def test_token_is_made_and_printed_locally_and_reaches_the_box_as_a_secret(self, launched, capsys):
        launch_modal.main()
        (values,) = launched["secret_values"]
        token = values["JUPYTER_TOKEN"]
        assert len(token) >= 40 and len(launched["options"]["secrets"]) == 1
        assert capsys.readouterr().out.count(token) == 1
        assert token not in json.dumps(launched["config"])  # the config is visible in Modal's call inputs
        launch_modal.main("--mode", "jupyter")
        assert launched["secret_values"][1]["JUPYTER_TOKEN"] != token  # a new token for every box

    @pytest.mark.parametrize(("mode", "variable"), [("jupyter", "JUPYTER_TOKEN"), ("vllm", "VLLM_API_KEY")])
    def test_box_refuses_to_start_without_its_credential(self, mode, variable, monkeypatch):
        monkeypatch.delenv(variable, raising=False)
        config = BoxConfig(mode=mode, model="Qwen/Qwen3-8B").model_dump_json()
        with pytest.raises(RuntimeError, match=f"{variable} is missing"):
            launch_modal.box.local(config)
        monkeypatch.setenv(variable, "short")
        with pytest.raises(RuntimeError, match=f"{variable} is missing"):
            launch_modal.box.local(config)


class TestUpload:
    @pytest.mark.parametrize(
        "path",
        [
            ".env",
            ".env.production",
            "configs/.env",
            "secrets/server.pem",
            "api.key",
            "id_ed25519",
            "notes/id_rsa",
            "data/default/train.parquet",
            "runs/cpu-smollm2/merged/model.safetensors",
            ".git/config",
        ],
    )
    def test_secrets_datasets_and_runs_are_not_uploaded(self, path):
        assert FilePatternMatcher(*launch_modal.NOT_UPLOADED)(Path(path))

    def test_the_code_and_configs_are_uploaded(self):
        ignored = FilePatternMatcher(*launch_modal.NOT_UPLOADED)
        for path in ["launch_modal.py", "evals/judge.py", "configs/data/default.yaml", "configs/policies/x.yaml"]:
            assert not ignored(Path(path)), path


class TestVllm:
    def test_vllm_mode_needs_a_model(self):
        with pytest.raises(ValueError, match="--model"):
            BoxConfig(mode="vllm")

    def test_command_serves_the_model_and_takes_the_key_from_the_environment(self):
        command = launch_modal.vllm_command(BoxConfig(mode="vllm", model="Qwen/Qwen3-8B", max_model_len=4096))
        assert command[:3] == ["vllm", "serve", "Qwen/Qwen3-8B"]
        assert "--port=8000" in command and "--max-model-len=4096" in command
        # vLLM requires the key from $VLLM_API_KEY on /v1; on argv it would land in vLLM's startup log line.
        assert launch_modal.CREDENTIAL_ENV["vllm"] == "VLLM_API_KEY"
        assert "--middleware=vllm_key_guard.require_api_key" in command
        assert not any("key" in arg.lower() for arg in command if not arg.startswith("--middleware"))

    def test_every_path_needs_the_key(self, monkeypatch, tmp_path):
        """No anonymous access: vLLM checks /v1 only; the middleware module it loads refuses everything else too."""
        import importlib

        from fastapi import FastAPI
        from fastapi.testclient import TestClient

        monkeypatch.syspath_prepend(str(launch_modal.write_key_guard(tmp_path / "guard")))
        guard = importlib.import_module(launch_modal.KEY_GUARD)
        assert Path(guard.__file__).parent == tmp_path / "guard"
        api = FastAPI()
        api.middleware("http")(guard.require_api_key)
        for path in ("/v1/chat/completions", "/invocations", "/tokenize"):
            api.post(path)(lambda: {"ok": True})
        api.get("/health")(lambda: {"ok": True})
        client = TestClient(api)
        key = "k" * 43
        monkeypatch.setenv("VLLM_API_KEY", key)
        for path in ("/v1/chat/completions", "/invocations", "/tokenize"):
            assert client.post(path).status_code == 401
            assert client.post(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert client.post(path, headers={"Authorization": key}).status_code == 401
            assert client.post(path, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert client.get("/health").status_code == 401
        monkeypatch.delenv("VLLM_API_KEY")
        assert client.post("/invocations", headers={"Authorization": "Bearer "}).status_code == 401

    def test_launch_makes_a_key_locally_prints_it_once_and_sends_it_as_a_secret(self, launched, capsys):
        launch_modal.main(
            "--mode", "vllm", "--model", "Qwen/Qwen3-8B", "--gpu=H100", "--idle-timeout", "600", "max_hours=2"
        )
        (values,) = launched["secret_values"]
        key = values["VLLM_API_KEY"]
        out = capsys.readouterr().out
        assert len(key) >= 40 and out.count(key) == 2  # the key line and the export line of the judge command
        assert "--model Qwen/Qwen3-8B --api-key-env JUDGE_API_KEY" in out
        assert launched["config"]["mode"] == "vllm" and key not in json.dumps(launched["config"])
        assert (launched["options"]["gpu"], launched["options"]["timeout"]) == ("H100", 7200)
        assert len(launched["options"]["secrets"]) == 1

    def test_vllm_mode_without_a_model_stops_before_launching(self, launched, capsys):
        with pytest.raises(SystemExit):
            launch_modal.main("--mode", "vllm")
        assert "--model" in capsys.readouterr().err and "options" not in launched

    METRICS = (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="m"} RUNNING\n'
        'vllm:num_requests_waiting{engine="0",model_name="m"} 0.0\n'
        'vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} FINISHED\n'
        'vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 1.0\n'
        "vllm:num_requests_running_other 9.0\n"
    )

    def test_requests_are_read_from_the_metrics(self):
        text = self.METRICS.replace("RUNNING", "2.0").replace("FINISHED", "5.0")
        assert launch_modal.vllm_requests(text) == (6.0, 2.0)
        assert launch_modal.vllm_requests("") == (0.0, 0.0)

    def test_server_is_busy_while_requests_run_or_finish(self):
        state = {"running": "0.0", "finished": "0.0"}

        def page():
            return 200, self.METRICS.replace("RUNNING", state["running"]).replace("FINISHED", state["finished"])

        with LocalServer({"/metrics": page}) as server:
            activity = launch_modal.VllmActivity("k" * 43, server.port)
            assert activity()  # 1 request finished since start
            assert not activity()
            state["running"] = "1.0"
            assert activity()
            state |= {"running": "0.0", "finished": "3.0"}
            assert activity() and not activity()
        assert server.headers[0]["Authorization"] == "Bearer " + "k" * 43
        assert not launch_modal.VllmActivity("k" * 43, server.port)()  # server gone: not busy


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
            launch_modal.main("--mode", "ssh")
        assert exit_info.value.code == 2 and "--public-key" in capsys.readouterr().err
        private = tmp_path / "id_ed25519"
        private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
        with pytest.raises(SystemExit):
            launch_modal.main("--mode", "ssh", "--public-key", str(private))
        assert "private key" in capsys.readouterr().err
