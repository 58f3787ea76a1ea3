"""The webmail page in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven by Selenium (PyPI). Screenshots go to ARTIFACTS.
Usage: webmail_browser.py PORT USER PASSWORD ARTIFACTS SCENARIO [ARGS...]; prints one JSON object.

Scenarios:
  reply SUBJECT FILE      log in, open the message, download its attachment (if any), reply
                          with FILE attached
  manage SUBJECT          open it, mark it unread, move it to Archive
  delete ROLE SUBJECT     open it in the mailbox with that role and delete it (to Trash)
  hostile SUBJECT PORT    open a hostile message while a "tracker" listens on PORT: what ran,
                          what the frame shows, which requests left the page
  inbox SUBJECT           log in and time until the list shows SUBJECT (page load)
  quote SUBJECT           open it: what the page shows (the frame's text or the plain text),
                          then Reply: what the reply quotes
"""
import http.server
import json
import os
import sys
import threading
import time

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import Select, WebDriverWait

port, user, password, artifacts, scenario, *args = sys.argv[1:]
os.makedirs(artifacts, exist_ok=True)
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--ignore-certificate-errors", "--window-size=1400,900"):
    options.add_argument(flag)
options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
downloads = os.path.join(artifacts, f"{scenario}-downloads")
os.makedirs(downloads, exist_ok=True)
driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": downloads})
# The list is redrawn after every change: an element found a moment ago may be gone.
wait = WebDriverWait(driver, 30, ignored_exceptions=[StaleElementReferenceException])
base = f"https://127.0.0.1:{port}/"
out = {}


def shot(name):
    driver.save_screenshot(os.path.join(artifacts, f"{scenario}-{name}.png"))


def log_in():
    driver.get(base)
    wait.until(ready.visibility_of_element_located((By.ID, "login-user"))).send_keys(user)
    driver.find_element(By.ID, "login-password").send_keys(password)
    driver.find_element(By.ID, "login-button").click()
    wait.until(ready.visibility_of_element_located((By.ID, "mail-view")))


def message_item(subject):
    def find(_):
        for item in driver.find_elements(By.CSS_SELECTOR, "#messages li"):
            if subject in item.text:
                return item
        return False
    return wait.until(find)


def open_message(subject):
    def click(_):
        message_item(subject).click()
        return True
    wait.until(click)
    wait.until(ready.text_to_be_present_in_element((By.ID, "message-subject"), subject))


def status_is(text):
    wait.until(ready.text_to_be_present_in_element((By.ID, "status"), text))


def requests_made():
    """Every URL the page (and its frames) asked for, from Chrome's performance log."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def mailbox(role):
    driver.find_element(By.CSS_SELECTOR, f'#mailboxes li[data-role="{role}"]').click()


try:
    if scenario == "inbox":
        started = time.monotonic()
        log_in()
        message_item(args[0])
        out["seconds_to_list"] = time.monotonic() - started
        out["listed"] = len(driver.find_elements(By.CSS_SELECTOR, "#messages li"))
        shot("list")
    elif scenario == "reply":
        subject, attachment = args
        log_in()
        shot("inbox")
        open_message(subject)
        out["body"] = driver.find_element(By.ID, "message-text").text
        shot("message")
        # Its attachment, downloaded as a user would (the button fetches it over JMAP).
        buttons = driver.find_elements(By.CSS_SELECTOR, "#message-attachments button")
        if buttons:
            name = buttons[0].text.split(" ")[1]
            for old in os.listdir(downloads):
                os.remove(os.path.join(downloads, old))
            buttons[0].click()
            path = os.path.join(downloads, name)
            wait.until(lambda _: os.path.exists(path) and not os.path.exists(path + ".crdownload"))
            with open(path, "rb") as f:
                out["downloaded"] = {"name": name, "content": f.read().decode(errors="replace")}
        driver.find_element(By.ID, "reply-button").click()
        body = wait.until(ready.visibility_of_element_located((By.ID, "compose-body")))
        body.send_keys("Thanks, the file is attached.")
        driver.find_element(By.ID, "compose-file").send_keys(attachment)
        out["to"] = driver.find_element(By.ID, "compose-to").get_attribute("value")
        out["subject"] = driver.find_element(By.ID, "compose-subject").get_attribute("value")
        shot("reply")
        driver.find_element(By.ID, "send-button").click()
        status_is("Sent")
        shot("sent")
    elif scenario == "manage":
        subject = args[0]
        log_in()
        open_message(subject)
        driver.find_element(By.ID, "unread-button").click()
        wait.until(lambda _: "unread" in message_item(subject).get_attribute("class"))
        out["unread_after_mark"] = True
        Select(driver.find_element(By.ID, "move-select")).select_by_visible_text("Archive")
        driver.find_element(By.ID, "move-button").click()
        status_is("Moved")
        mailbox("archive")
        message_item(subject)
        shot("archived")
        out["in_archive"] = True
    elif scenario == "delete":
        role, subject = args
        log_in()
        mailbox(role)
        open_message(subject)
        driver.find_element(By.ID, "delete-button").click()
        status_is("Moved")
        mailbox("trash")
        message_item(subject)
        shot("trash")
        out["in_trash"] = True
    elif scenario == "quote":
        subject = args[0]
        log_in()
        open_message(subject)
        frame = driver.find_element(By.ID, "message-html")
        if frame.is_displayed():
            wait.until(lambda _: driver.execute_script(
                "return document.getElementById('message-html').srcdoc.length > 0;"))
            driver.switch_to.frame(frame)
            out["shown"] = driver.find_element(By.TAG_NAME, "body").text
            driver.switch_to.default_content()
        else:
            out["shown"] = driver.find_element(By.ID, "message-text").text
        shot("read")
        driver.find_element(By.ID, "reply-button").click()
        body = wait.until(ready.visibility_of_element_located((By.ID, "compose-body")))
        out["quoted"] = body.get_attribute("value")
        shot("quoted")
    elif scenario == "hostile":
        subject, tracker_port = args[0], int(args[1])
        hits = []

        class Tracker(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_):
                pass

        tracker = http.server.ThreadingHTTPServer(("127.0.0.1", tracker_port), Tracker)
        threading.Thread(target=tracker.serve_forever, daemon=True).start()
        log_in()
        open_message(subject)
        frame = wait.until(ready.visibility_of_element_located((By.ID, "message-html")))
        # Give anything the message might run the chance to: the frame's own load completes.
        wait.until(lambda _: driver.execute_script(
            "const f = document.getElementById('message-html');"
            "return f.srcdoc.length > 0 && f.contentDocument === null;"))
        shot("hostile")
        try:
            driver.switch_to.alert
            out["alert"] = True
        except NoAlertPresentException:
            out["alert"] = False
        out["pwned"] = driver.execute_script("return window.pwned === undefined ? null : window.pwned;")
        out["title"] = driver.title
        driver.switch_to.frame(frame)
        out["frame_text"] = driver.find_element(By.TAG_NAME, "body").text
        out["frame_links"] = [a.get_attribute("href") for a in driver.find_elements(By.TAG_NAME, "a")]
        out["frame_images"] = [i.get_attribute("src") for i in driver.find_elements(By.TAG_NAME, "img")]
        driver.switch_to.default_content()
        out["requests"] = requests_made()
        out["tracker_hits"] = hits
        tracker.shutdown()
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    out["console"] = [e["message"] for e in driver.get_log("browser")]
finally:
    driver.quit()
print(json.dumps(out))
