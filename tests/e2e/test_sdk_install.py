"""The installed SDK is enough to build and run a third-party module.

`cmake --install` the build tree into a temporary prefix, build
sdk/examples/hello with its Makefile against that prefix only (pkg-config
finds rx-sdk.pc there and nowhere else), then run the *installed* rxd with the
module: HTTP routes, config and environment, CLI command, readiness, OpenAPI,
graceful stop. Also checks that the executable exports the SDK (rx_*) and
nothing else.

Self-contained on purpose (standard library only, no shared harness).
Environment: RXD_BUILD_DIR (the CMake build tree), RXD_SOURCE_DIR (the
checkout), optionally RXD_TEST_MODULES (where testkit.so is).
"""

import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

SOURCE_DIR = os.path.abspath(os.environ.get("RXD_SOURCE_DIR", "."))
BUILD_DIR = os.path.abspath(os.environ.get("RXD_BUILD_DIR", os.path.join(SOURCE_DIR, "build")))
TEST_MODULES = os.path.abspath(
    os.environ.get("RXD_TEST_MODULES", os.path.join(BUILD_DIR, "test-modules")))


def clean_env(**extra):
    """The caller's environment without RXD_* (they would override the test's
    config) and without PKG_CONFIG_PATH, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RXD_") and k != "PKG_CONFIG_PATH"}
    env.update(extra)
    return env


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(argv, timeout=300, **kw):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, **kw)


class Server:
    """One installed `rxd serve` on a free loopback port."""

    def __init__(self, rxd, config_text, workdir, env=None):
        self.port = free_port()
        self.config = os.path.join(workdir, "serve-%d.conf" % self.port)
        with open(self.config, "w") as f:
            f.write("listen = 127.0.0.1:%d\n" % self.port)
            f.write(config_text)
        self.log_path = self.config + ".log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([rxd, "--config", self.config, "serve"], cwd=workdir,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env=clean_env(**(env or {})))
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("rxd serve exited with %d:\n%s" % (self.proc.returncode,
                                                                        self.output()))
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("rxd serve did not answer /healthz:\n" + self.output())
            time.sleep(0.05)

    def output(self):
        # The child writes the log through its own descriptor: just read it.
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            ctype = r.getheader("Content-Type") or ""
            parsed = json.loads(data) if data and ctype.startswith("application/json") else data
            return r.status, parsed, r
        finally:
            conn.close()

    def stop(self):
        """SIGTERM; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class TestSdkInstall(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="rxd-sdk-")
        try:
            cls._install_and_build()
        except BaseException:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def _install_and_build(cls):
        cls.prefix = os.path.join(cls.tmp, "prefix")
        r = run(["cmake", "--install", BUILD_DIR, "--prefix", cls.prefix], env=clean_env())
        if r.returncode != 0:
            raise AssertionError("cmake --install failed (%d):\n%s%s"
                                 % (r.returncode, r.stdout, r.stderr))
        cls.rxd = os.path.join(cls.prefix, "bin", "rxd")
        # lib/, lib64/ or lib/<multiarch triplet>/ depending on GNUInstallDirs.
        pcs = (glob.glob(os.path.join(cls.prefix, "lib*", "pkgconfig", "rx-sdk.pc"))
               + glob.glob(os.path.join(cls.prefix, "lib*", "*", "pkgconfig", "rx-sdk.pc")))
        cls.pc_file = pcs[0] if len(pcs) == 1 else None
        cls.pc_dir = os.path.dirname(cls.pc_file) if cls.pc_file else None
        cls.pcs = pcs

        # Build a copy of the example, so the checkout stays clean, with
        # PKG_CONFIG_PATH naming the temporary prefix only (given on make's
        # command line, as the README says). jansson.pc comes from the system.
        cls.example = os.path.join(cls.tmp, "hello")
        shutil.copytree(os.path.join(SOURCE_DIR, "sdk", "examples", "hello"), cls.example,
                        ignore=shutil.ignore_patterns("*.so", "*.o"))
        cls.make = None
        if cls.pc_dir is not None:
            cls.make = run(["make", "-C", cls.example, "PKG_CONFIG_PATH=" + cls.pc_dir],
                           env=clean_env())
        cls.module_dir = os.path.join(cls.tmp, "modules")
        os.mkdir(cls.module_dir)
        if cls.make is not None and cls.make.returncode == 0:
            shutil.copy(os.path.join(cls.example, "hello.so"), cls.module_dir)

    # ---- helpers ----

    def require_module(self):
        self.assertIsNotNone(self.pc_file, "rx-sdk.pc not installed exactly once: %r" % self.pcs)
        self.assertEqual(self.make.returncode, 0,
                         "make failed:\n%s%s" % (self.make.stdout, self.make.stderr))

    def config(self, extra="", modules="hello"):
        return ("workers = 2\nmodules = %s\nmodule_path = %s\nshutdown_grace = 5s\n%s"
                % (modules, self.module_dir, extra))

    def write_config(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def rxd_cli(self, config_path, *args, env=None):
        return run([self.rxd, "--config", config_path] + list(args), timeout=30,
                   cwd=self.tmp, env=clean_env(**(env or {})))

    def serve(self, extra="", env=None, modules="hello"):
        s = Server(self.rxd, self.config(extra, modules), self.tmp, env)
        self.addCleanup(s.kill)
        return s

    def stop_ok(self, server):
        rc = server.stop()
        self.assertEqual(rc, 0, "rxd serve exit status after SIGTERM:\n" + server.output())

    # ---- the install ----

    def test_install_layout(self):
        for rel in ("bin/rxd", "include/rxd/rx.h", "etc/rxd/rxd.conf", "etc/rxd/rxd.conf.example"):
            self.assertTrue(os.path.isfile(os.path.join(self.prefix, rel)), rel + " not installed")
        self.assertTrue(os.access(self.rxd, os.X_OK), "bin/rxd is not executable")
        self.assertEqual(len(self.pcs), 1, "rx-sdk.pc installed %d times: %r"
                         % (len(self.pcs), self.pcs))
        with open(os.path.join(SOURCE_DIR, "sdk", "rx.h")) as a, \
                open(os.path.join(self.prefix, "include", "rxd", "rx.h")) as b:
            self.assertEqual(a.read(), b.read(), "installed rx.h differs from sdk/rx.h")

    def test_pkg_config_points_into_the_prefix(self):
        """The .pc file must name the prefix it was installed to (cmake --install
        --prefix relocates), else the module build finds no rx.h or a stale one."""
        self.assertIsNotNone(self.pc_file, "rx-sdk.pc not installed exactly once: %r" % self.pcs)
        env = clean_env(PKG_CONFIG_PATH=self.pc_dir)
        r = run(["pkg-config", "--cflags", "rx-sdk"], env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        incs = [f[2:] for f in r.stdout.split() if f.startswith("-I")]
        want = os.path.realpath(os.path.join(self.prefix, "include", "rxd"))
        self.assertIn(want, [os.path.realpath(i) for i in incs],
                      "pkg-config --cflags rx-sdk gives %r, not the installed include dir %s"
                      % (r.stdout.strip(), want))
        self.assertIn("-fvisibility=hidden", r.stdout.split())
        r = run(["pkg-config", "--modversion", "rx-sdk"], env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout.strip(), r"^\d+\.\d+\.\d+")

    def test_exports_only_the_sdk(self):
        """The version script keeps every kernel symbol local but rx_*."""
        self.assertIsNotNone(shutil.which("nm"), "nm (binutils) is needed: apt-get install binutils")
        r = run(["nm", "-D", "--defined-only", self.rxd])
        self.assertEqual(r.returncode, 0, r.stderr)
        exported, foreign = set(), []
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) != 3 or parts[1] not in ("T", "D", "B", "R"):
                continue
            name = parts[2]
            # name@LIB_VERSION: a copy relocation of a library's data object
            # (stdout@GLIBC_2.2.5) lives in the executable's .bss but is not ours;
            # our exports carry no version (kernel/rxd.map names none).
            if "@" in name:
                continue
            # A sanitizer build links the ASan/UBSan runtime, which exports its own
            # __asan_* / __ubsan_* / __sanitizer_* options: theirs, not ours.
            if name.startswith(("__asan", "__ubsan", "__lsan", "__sanitizer")):
                continue
            exported.add(name)
            if not name.startswith("rx_"):
                foreign.append(line.strip())
        self.assertEqual(foreign, [], "rxd exports symbols outside the SDK:\n" + "\n".join(foreign))
        for name in ("rx_route", "rx_req_json", "rx_reply_json", "rx_config_str"):
            self.assertIn(name, exported)

    def test_exports_every_sdk_function(self):
        """Every function rx.h declares is exported: a module calling one the
        kernel lacks would fail to load (RTLD_NOW) with an unresolved symbol."""
        self.assertIsNotNone(shutil.which("nm"), "nm (binutils) is needed: apt-get install binutils")
        with open(os.path.join(self.prefix, "include", "rxd", "rx.h")) as f:
            header = f.read()
        declared = set(re.findall(r"RX_EXPORT\s+[^;(]*?\b(rx_\w+)\s*\(", header))
        self.assertGreater(len(declared), 30)
        r = run(["nm", "-D", "--defined-only", self.rxd])
        self.assertEqual(r.returncode, 0, r.stderr)
        exported = {p[2] for p in (l.split() for l in r.stdout.splitlines())
                    if len(p) == 3 and p[1] == "T"}
        missing = sorted(declared - exported)
        self.assertEqual(missing, [], "declared in rx.h but not exported by rxd: "
                         + " ".join(missing))

    # ---- the module build ----

    def test_example_builds_without_warnings(self):
        self.require_module()
        out = self.make.stdout + self.make.stderr
        self.assertNotIn("warning:", out, out)
        so = os.path.join(self.example, "hello.so")
        if shutil.which("nm") is not None:
            r = run(["nm", "-D", "--defined-only", so])
            names = [p[2] for p in (l.split() for l in r.stdout.splitlines())
                     if len(p) == 3 and p[1] in "TDBR"]
            self.assertEqual(names, ["rx_module_descriptor"],
                             "hello.so should export its descriptor only")

    # ---- the installed rxd with the module ----

    def test_cli_routes_and_command(self):
        self.require_module()
        conf = self.write_config("cli.conf", self.config())
        r = self.rxd_cli(conf, "routes")
        self.assertEqual(r.returncode, 0, r.stderr)
        section = re.search(r"^hello \S+\n((?:  .*\n?)+)", r.stdout, re.M)
        self.assertIsNotNone(section, "no 'hello' section in rxd routes:\n" + r.stdout)
        lines = section.group(1)
        self.assertRegex(lines, r"GET\s+/hello/\{name\}/\s+public")
        self.assertRegex(lines, r"POST\s+/hello/\s+authenticated")

        r = self.rxd_cli(conf, "hello", "Bob")
        self.assertEqual((r.returncode, r.stdout), (0, "Hello, Bob!\n"), r.stderr)
        r = self.rxd_cli(conf, "hello")
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage", r.stderr)
        r = self.rxd_cli(conf, "help")
        self.assertRegex(r.stdout, r"hello\s+NAME.*\(module hello\)")

    def test_config_file_then_environment(self):
        self.require_module()
        conf = self.write_config("greet.conf", self.config("\n[hello]\ngreeting = Howdy\n"))
        r = self.rxd_cli(conf, "hello", "Bob")
        self.assertEqual((r.returncode, r.stdout), (0, "Howdy, Bob!\n"), r.stderr)
        r = self.rxd_cli(conf, "hello", "Bob", env={"RXD_HELLO_GREETING": "Bonjour"})
        self.assertEqual((r.returncode, r.stdout), (0, "Bonjour, Bob!\n"), r.stderr)
        # A greeting that can never work refuses the start, saying why.
        r = self.rxd_cli(conf, "check", env={"RXD_HELLO_GREETING": "x" * 65})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("hello.greeting is longer than 64 characters", r.stderr)

    def test_check_readiness_and_openapi(self):
        self.require_module()
        conf = self.write_config("check.conf", self.config())
        r = self.rxd_cli(conf, "check")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertRegex(r.stdout, r"module hello\s+1\.0\.0")
        # An empty greeting starts, but is not ready.
        r = self.rxd_cli(conf, "check", env={"RXD_HELLO_GREETING": ""})
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("not ready: hello.greeting: hello.greeting is empty", r.stderr)

        r = self.rxd_cli(conf, "openapi")
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        get = doc["paths"]["/hello/{name}/"]["get"]
        self.assertEqual(get["summary"], "Greet someone")
        post = doc["paths"]["/hello/"]["post"]
        self.assertIn("authenticated", post["summary"])
        self.assertIn("HelloRequest", json.dumps(post.get("requestBody")))
        schemas = doc["components"]["schemas"]
        self.assertEqual(schemas["HelloRequest"]["required"], ["name"])
        self.assertIn("message", schemas["HelloMessage"]["properties"])

    def test_serve(self):
        self.require_module()
        s = self.serve()
        status, body, _ = s.request("GET", "/hello/World/")
        self.assertEqual((status, body), (200, {"message": "Hello, World!"}), s.output())
        status, body, _ = s.request("GET", "/hello/J%C3%BCrgen/")
        self.assertEqual((status, body), (200, {"message": "Hello, J\u00fcrgen!"}))
        status, body, _ = s.request("GET", "/hello/%s/" % ("a" * 65))
        self.assertEqual((status, body), (400, {
            "name": ["Ensure this field has no more than 64 characters."], "code": "invalid"}))
        status, body, _ = s.request("GET", "/hello/%FF/")
        self.assertEqual(status, 400)
        self.assertEqual(body["name"], ["Not a valid string."])
        status, _, _ = s.request("HEAD", "/hello/World/")
        self.assertEqual(status, 200)

        status, body, r = s.request("POST", "/hello/", body=b'{"name": "Ann"}',
                                    headers={"Content-Type": "application/json"})
        self.assertEqual(status, 401)
        self.assertEqual(body["code"], "not_authenticated")
        self.assertIsNotNone(r.getheader("WWW-Authenticate"))

        status, body, _ = s.request("GET", "/readyz")
        self.assertEqual(status, 200)
        self.assertEqual(body["checks"]["hello.greeting"]["status"], "ok")
        status, body, _ = s.request("GET", "/api/schema/")
        self.assertEqual(status, 200)
        self.assertIn("/hello/{name}/", body["paths"])
        self.stop_ok(s)

    def test_serve_environment_override(self):
        self.require_module()
        s = self.serve("\n[hello]\ngreeting = Howdy\n", env={"RXD_HELLO_GREETING": "Bonjour"})
        status, body, _ = s.request("GET", "/hello/World/")
        self.assertEqual((status, body), (200, {"message": "Bonjour, World!"}), s.output())
        self.stop_ok(s)

    def test_serve_not_ready_with_empty_greeting(self):
        self.require_module()
        s = self.serve(env={"RXD_HELLO_GREETING": ""})
        status, body, _ = s.request("GET", "/readyz")
        self.assertEqual(status, 503)
        self.assertEqual(body["checks"]["hello.greeting"],
                         {"status": "fail", "reason": "hello.greeting is empty"})
        self.stop_ok(s)

    def test_post_validation_with_an_authenticating_module(self):
        """POST /hello/ with a principal: testkit's fake bearer hook
        ("user-<id>-<role>") stands in for a real authentication module."""
        self.require_module()
        testkit = os.path.join(TEST_MODULES, "testkit.so")
        self.assertTrue(os.path.isfile(testkit), "testkit.so not built (%s)" % testkit)
        shutil.copy(testkit, self.module_dir)
        self.addCleanup(os.unlink, os.path.join(self.module_dir, "testkit.so"))
        s = self.serve(modules="hello testkit")
        auth = {"Authorization": "Bearer user-7-STAFF", "Content-Type": "application/json"}

        def post(body, headers=auth):
            status, parsed, _ = s.request("POST", "/hello/", body=body, headers=headers)
            return status, parsed

        self.assertEqual(post(b'{"name": "Ann"}'),
                         (200, {"message": "Hello, Ann!", "user_id": 7}))
        self.assertEqual(post(b"{}"), (400, {"name": ["This field is required."],
                                             "code": "invalid"}))
        self.assertEqual(post(b""), (400, {"name": ["This field is required."],
                                           "code": "invalid"}))
        self.assertEqual(post(b'{"name": ""}'),
                         (400, {"name": ["This field may not be blank."], "code": "invalid"}))
        self.assertEqual(post(b'{"name": null}'),
                         (400, {"name": ["This field may not be null."], "code": "invalid"}))
        self.assertEqual(post(b'{"name": 5}'),
                         (400, {"name": ["Not a valid string."], "code": "invalid"}))
        self.assertEqual(post(json.dumps({"name": "a" * 65}).encode()), (400, {
            "name": ["Ensure this field has no more than 64 characters."], "code": "invalid"}))
        # 64 characters of two bytes each: counted as characters, not bytes.
        self.assertEqual(post(json.dumps({"name": "\u00e9" * 64}).encode())[0], 200)
        status, body = post(b"[1]")
        self.assertEqual(status, 400)
        self.assertIn("non_field_errors", body)
        status, body = post(b"{not json")
        self.assertEqual(status, 400)
        status, _ = post(b'{"name": "Ann"}', headers={"Authorization": "Bearer user-7-STAFF",
                                                      "Content-Type": "text/plain"})
        self.assertEqual(status, 415)
        status, _ = post(json.dumps({"name": "x" * 5000}).encode())
        self.assertEqual(status, 413)
        self.stop_ok(s)


if __name__ == "__main__":
    unittest.main()
