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
  links SUBJECT PORT      open it while a site listens on PORT, click its link: where it opened,
                          what the site was sent, whether the webmail stayed
  images S1 S2 S3 PORT    three messages of one sender with images on an image server on PORT:
                          hidden until "Show images" (S1), "Always" (S2), then shown (S3)
  push SUBJECT SMTP       log in, deliver SUBJECT over SMTP (port SMTP), wait for it in the list
  phone SUBJECT           at 360 px wide: the list, the message in its place, back
  keys S1 S2 S3           shortcuts: j/k, r (reply quoted, saved as draft), y archive, # delete
  search WORD SUBJECT TO  search for WORD, open SUBJECT among the results, forward it to TO
Screenshots are taken at 1280 px wide (and 360 px in phone).
"""
import http.server
import json
import os
import struct
import sys
import threading
import time
import zlib

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import Select, WebDriverWait

port, user, password, artifacts, scenario, *args = sys.argv[1:]
os.makedirs(artifacts, exist_ok=True)
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--ignore-certificate-errors", "--window-size=1280,800"):
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
    # The folders are redrawn by each refresh (pushed ones too): retried while stale.
    def click(_):
        driver.find_element(By.CSS_SELECTOR, f'#mailboxes li[data-role="{role}"]').click()
        return True
    wait.until(click)


def frame_loaded():
    """Waits until the message frame has loaded its document (its body is there)."""
    wait.until(lambda _: "/webmail/frame/" in (driver.find_element(By.ID, "message-html").get_attribute("src") or ""))
    frame = driver.find_element(By.ID, "message-html")

    def loaded(_):
        driver.switch_to.frame(frame)
        try:
            return len(driver.find_elements(By.CSS_SELECTOR, "body *")) > 0
        finally:
            driver.switch_to.default_content()
    wait.until(loaded)
    return frame


def in_frame(action):
    frame = driver.find_element(By.ID, "message-html")
    driver.switch_to.frame(frame)
    try:
        return action()
    finally:
        driver.switch_to.default_content()


def png(width, height):
    """A small grey PNG image."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


class Recorder(http.server.BaseHTTPRequestHandler):
    """A site of the outside world: records each request (path and the headers that would
    identify the reader) and answers a page or a small PNG."""
    hits = []
    PNG = None

    def do_GET(self):
        Recorder.hits.append({"path": self.path, "referer": self.headers.get("Referer"),
                              "cookie": self.headers.get("Cookie")})
        if self.path.endswith(".png"):
            body, kind = png(40, 30), "image/png"
        else:
            body, kind = b"<!doctype html><title>Landing</title><p>Landed</p>", "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", "tracker=1; Path=/")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


def serve(port):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def press(key):
    ActionChains(driver).send_keys(key).perform()


def phone_width():
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 360, "height": 740, "deviceScaleFactor": 1, "mobile": True})


def layout():
    """Where the main parts are and whether the page is wider than the window."""
    return driver.execute_script("""
        const box = (id) => { const e = document.getElementById(id); const r = e.getBoundingClientRect();
          return {shown: r.width > 0 && r.height > 0 && getComputedStyle(e).display !== 'none',
                  left: Math.round(r.left), width: Math.round(r.width)}; };
        return {viewport: window.innerWidth, scroll_width: document.documentElement.scrollWidth,
                list: box('list'), reader: box('reader'), search: box('search-box')};""")


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
            frame_loaded()
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
    elif scenario == "links":
        subject, site_port = args[0], int(args[1])
        site = serve(site_port)
        log_in()
        open_message(subject)
        frame_loaded()
        webmail = driver.current_window_handle

        def link_facts():
            link = driver.find_element(By.PARTIAL_LINK_TEXT, "Landing page")
            ActionChains(driver).move_to_element(link).perform()
            shown = driver.execute_script("return getComputedStyle(arguments[0], '::after').content;", link)
            return {"target": link.get_attribute("target"), "rel": link.get_attribute("rel"),
                    "href": link.get_attribute("href"), "hover_shows": shown}
        out["link"] = in_frame(link_facts)
        shot("hover-1280")
        in_frame(lambda: driver.find_element(By.PARTIAL_LINK_TEXT, "Landing page").click())
        wait.until(lambda _: len(driver.window_handles) == 2)
        out["webmail_url"] = driver.current_url
        out["webmail_still_shown"] = driver.find_element(By.ID, "reader").is_displayed() and \
            subject in driver.find_element(By.ID, "message-subject").text
        tab = [h for h in driver.window_handles if h != webmail][0]
        driver.switch_to.window(tab)
        wait.until(lambda _: driver.title == "Landing")
        out["new_tab_url"] = driver.current_url
        out["new_tab_opener"] = driver.execute_script("return window.opener === null ? null : 'set';")
        driver.switch_to.window(webmail)
        out["site_hits"] = Recorder.hits
        shot("after-click-1280")
        site.shutdown()
    elif scenario == "images":
        first, second, third, image_port = args[0], args[1], args[2], int(args[3])
        server = serve(image_port)
        log_in()

        def image_state():
            def facts():
                images = driver.find_elements(By.TAG_NAME, "img")
                body = driver.find_element(By.TAG_NAME, "body")
                styled = driver.find_elements(By.CSS_SELECTOR, "span[style]")
                return {"srcs": [i.get_attribute("src") for i in images],
                        "loaded": [int(i.get_property("naturalWidth") or 0) for i in images],
                        "font": body.value_of_css_property("font-family"),
                        "styled_color": styled[0].value_of_css_property("color") if styled else None,
                        "text": body.text}
            return in_frame(facts)

        def bar():
            return driver.find_element(By.ID, "images-bar")

        open_message(first)
        frame_loaded()
        out["first_before"] = image_state()
        out["first_bar"] = bar().is_displayed() and bar().text
        out["hits_before_click"] = list(Recorder.hits)
        shot("hidden-1280")
        driver.find_element(By.ID, "show-images").click()
        wait.until(lambda _: any(h["path"] == "/one.png" for h in Recorder.hits))
        frame_loaded()
        wait.until(lambda _: 40 in image_state()["loaded"])
        out["first_after"] = image_state()
        out["first_bar_after"] = bar().is_displayed()
        shot("shown-1280")
        open_message(second)
        frame_loaded()
        out["second_before"] = image_state()
        out["hits_before_always"] = list(Recorder.hits)
        driver.find_element(By.ID, "always-images").click()
        wait.until(lambda _: any(h["path"] == "/two.png" for h in Recorder.hits))
        open_message(third)
        wait.until(lambda _: any(h["path"] == "/three.png" for h in Recorder.hits))
        frame_loaded()
        out["third_bar"] = bar().is_displayed()
        out["hits"] = Recorder.hits
        server.shutdown()
    elif scenario == "push":
        subject, smtp_port = args[0], int(args[1])
        import smtplib
        log_in()
        wait.until(lambda _: "message(s)" in driver.find_element(By.ID, "status").text)
        driver.execute_script("window.stillTheSamePage = true;")
        out["listed_before"] = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#messages li")]
        # The event stream is open before the delivery (the page opens it after the list).
        wait.until(lambda _: any("/jmap/eventsource" in url for url in requests_made()))
        started = time.monotonic()
        with smtplib.SMTP("127.0.0.1", smtp_port) as smtp:
            smtp.sendmail("sender@client.test", [user],
                          f"From: Dora <dora@example.test>\r\nTo: {user}\r\nSubject: {subject}\r\n\r\nPushed.\r\n")
        message_item(subject)
        out["seconds_to_appear"] = time.monotonic() - started
        out["same_page"] = driver.execute_script("return window.stillTheSamePage === true;")
        shot("pushed-1280")
    elif scenario == "phone":
        subject = args[0]
        phone_width()
        log_in()
        message_item(subject)
        out["list_view"] = layout()
        out["preview"] = message_item(subject).find_element(By.CSS_SELECTOR, ".preview").text
        shot("list-360")
        open_message(subject)
        wait.until(lambda _: driver.find_element(By.ID, "reader").is_displayed())
        if driver.find_element(By.ID, "message-html").is_displayed():
            frame_loaded()
        out["message_view"] = layout()
        shot("message-360")
        driver.find_element(By.ID, "back-button").click()
        wait.until(lambda _: driver.find_element(By.ID, "list").is_displayed())
        out["back_view"] = layout()
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        driver.set_window_size(1280, 800)
        open_message(subject)
        out["wide_view"] = layout()
        shot("message-1280")
    elif scenario == "keys":
        log_in()
        for subject in args:
            message_item(subject)
        titles = [li.find_element(By.CSS_SELECTOR, ".subject").text
                  for li in driver.find_elements(By.CSS_SELECTOR, "#messages li")]
        out["order"] = titles

        def showing(subject):
            wait.until(lambda _: driver.find_element(By.ID, "message-subject").text == subject)
        press("j")
        showing(titles[0])
        press("j")
        showing(titles[1])
        press("k")
        showing(titles[0])
        press("j")
        showing(titles[1])
        press("r")
        body = wait.until(ready.visibility_of_element_located((By.ID, "compose-body")))
        out["reply_subject"] = driver.find_element(By.ID, "compose-subject").get_attribute("value")
        out["reply_to"] = driver.find_element(By.ID, "compose-to").get_attribute("value")
        out["quoted"] = body.get_attribute("value")
        body.send_keys("A draft answer.")
        shot("reply-1280")
        driver.find_element(By.ID, "save-draft-button").click()
        status_is("Draft saved")
        driver.find_element(By.ID, "cancel-button").click()
        wait.until(lambda _: driver.find_element(By.ID, "reader").is_displayed())
        press("y")
        status_is("Archived")
        out["archived"] = titles[1]
        # The one that took its place is opened.
        showing(titles[2])
        press("#")
        status_is("Moved")
        out["deleted"] = titles[2]
        showing(titles[0])
        shot("after-keys-1280")
    elif scenario == "search":
        word, subject, to = args
        log_in()
        box = driver.find_element(By.ID, "search-box")
        box.send_keys(word)
        box.send_keys(Keys.ENTER)
        wait.until(lambda _: "found for" in driver.find_element(By.ID, "status").text)
        out["found"] = [li.find_element(By.CSS_SELECTOR, ".subject").text
                        for li in driver.find_elements(By.CSS_SELECTOR, "#messages li")]
        shot("results-1280")
        open_message(subject)
        driver.find_element(By.ID, "forward-button").click()
        wait.until(lambda _: driver.find_element(By.ID, "compose-to").is_displayed())
        driver.find_element(By.ID, "compose-to").send_keys(to)
        out["forward_subject"] = driver.find_element(By.ID, "compose-subject").get_attribute("value")
        out["forward_body"] = driver.find_element(By.ID, "compose-body").get_attribute("value")
        out["forwarded_attachments"] = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#compose-forwarded li")]
        shot("forward-1280")
        driver.find_element(By.ID, "send-button").click()
        status_is("Sent")
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
        wait.until(ready.visibility_of_element_located((By.ID, "message-html")))
        # Give anything the message might run the chance to: the frame's own load completes.
        frame = frame_loaded()
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
