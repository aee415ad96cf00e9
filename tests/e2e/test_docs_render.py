"""The API documentation pages render in a real browser (headless Chromium):
Swagger UI and Redoc load their assets from rxd itself and show the routes of
the loaded modules. Needs Debian's chromium (scripts/deps.sh installs it)."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rxdtest import Server  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BUILD_DIR = os.environ.get("RXD_BUILD_DIR", "")


def dump_dom(url):
    with tempfile.TemporaryDirectory(prefix="rxd-chromium-") as profile:
        r = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--user-data-dir=" + profile, "--virtual-time-budget=15000",
             "--dump-dom", url],
            capture_output=True, text=True, timeout=90)
    return r.stdout


class DocsRender(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        web = os.path.abspath(os.path.join(BUILD_DIR, "web"))
        if not os.path.exists(os.path.join(web, "swagger-ui-bundle.js")):
            raise AssertionError("web assets missing in %s: build with RXD_WEB_ASSETS=ON" % web)
        cls.server = Server(env={"RXD_WEB_ROOT": web})
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.server.cleanup()

    def test_swagger_ui_lists_module_routes(self):
        dom = dump_dom("http://127.0.0.1:%d/api/schema/swagger/" % self.server.port)
        # Rendered operation blocks, not just the page shell.
        self.assertIn("opblock-summary-path", dom)
        self.assertIn("/test/json/", dom)
        self.assertIn("Echo the request", dom)

    def test_redoc_lists_module_routes(self):
        dom = dump_dom("http://127.0.0.1:%d/api/schema/redoc/" % self.server.port)
        self.assertIn("Echo the request", dom)
        self.assertIn("testkit", dom)

    def test_old_connector_address_serves_swagger(self):
        dom = dump_dom("http://127.0.0.1:%d/swagger/" % self.server.port)
        self.assertIn("opblock-summary-path", dom)


if __name__ == "__main__":
    unittest.main()
