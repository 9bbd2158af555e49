"""Drive the Panorama console in a real browser (Debian's chromium through
chromium-driver and Selenium), as tests/console.rs asks:

    console_browser.py <base url> <email> <profile id> <screenshot dir>

Signs in with the keyboard only (admin ada), finds the person by email,
reads their page, moves through the menu with Tab and Enter, builds and
saves the segment browser_buyers (orders >= 2), opens the voice of the
customer and operations pages, signs out, signs in as the analyst ann and
reads the same person. Saves a screenshot of each page and prints one JSON
object of what it saw, including every error the browser's console logged.
"""

import json
import sys
from urllib.parse import urlparse

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

base, email, profile_id, shots = sys.argv[1:5]

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,2400"):
    options.add_argument(flag)
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
driver.implicitly_wait(5)
report = {"console_errors": []}


def errors():
    for entry in driver.get_log("browser"):
        if entry.get("level") == "SEVERE":
            report["console_errors"].append(entry.get("message"))


def shot(name):
    driver.save_screenshot(f"{shots}/{name}.png")
    errors()


def path():
    return urlparse(driver.current_url).path


def text(css):
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def sign_in(name, password):
    driver.get(f"{base}/login")
    # The user field has the focus: type, Tab to the password, Enter.
    driver.switch_to.active_element.send_keys(name, Keys.TAB, password, Keys.ENTER)
    # Enter only starts the form's POST: wait until its answer has taken
    # the browser off the login page (and set the session cookie), or a
    # page opened next races the login and meets the login form instead.
    WebDriverWait(driver, 20).until(lambda d: path() != "/login")


try:
    sign_in("ada", "ada-secret")
    report["keyboard_login"] = path() == "/search"
    # The search box has the focus too.
    driver.switch_to.active_element.send_keys(email.upper(), Keys.ENTER)
    report["person_url"] = path()
    report["admin_first_name"] = text("td[data-trait=first_name]")
    report["admin_emails"] = text("td[data-trait=emails]")
    report["identifiers"] = len(driver.find_elements(By.CSS_SELECTOR, "section[aria-labelledby=ids] tbody tr"))
    report["graph_edges"] = len(driver.find_elements(By.CSS_SELECTOR, "svg.graph line.edge"))
    report["requests"] = text("section[aria-labelledby=requests] tbody")
    report["block_buttons"] = len(driver.find_elements(By.CSS_SELECTOR, "form.inline button"))
    shot("person")

    # Keyboard only: Tab from the top of the page to "Segments", Enter.
    # From a fresh load, where sequential focus starts at the top.
    driver.get(driver.current_url)
    ActionChains(driver).send_keys(Keys.TAB).perform()
    for _ in range(12):
        if driver.switch_to.active_element.text == "Segments":
            ActionChains(driver).send_keys(Keys.ENTER).perform()
            break
        ActionChains(driver).send_keys(Keys.TAB).perform()
    report["keyboard_nav"] = path()

    driver.get(f"{base}/segments/new")
    Select(driver.find_element(By.ID, "t1_field")).select_by_value("orders")
    Select(driver.find_element(By.ID, "t1_op")).select_by_value(">=")
    driver.find_element(By.ID, "t1_value").send_keys("2")
    driver.find_element(By.ID, "name").send_keys("browser_buyers")
    driver.find_element(By.CSS_SELECTOR, "button[value=preview]").click()
    report["builder_sql"] = text("#sql")
    report["builder_note"] = text("p.note")
    shot("builder")
    driver.find_element(By.CSS_SELECTOR, "button[value=save]").click()
    report["segment_url"] = path()
    report["segment_size"] = text("[data-size=browser_buyers]")
    shot("segment")

    driver.get(f"{base}/voc")
    report["voc_charts"] = len(driver.find_elements(By.CSS_SELECTOR, "svg.chart"))
    shot("voc")
    driver.get(f"{base}/operations")
    shot("operations")

    driver.find_element(By.CSS_SELECTOR, "form.logout button").click()
    driver.delete_all_cookies()
    driver.get(f"{base}/login")
    shot("login")
    sign_in("ann", "ann-secret")
    driver.get(f"{base}/person/{profile_id}")
    report["analyst_emails"] = text("td[data-trait=emails]")
    report["analyst_sees_email"] = email.lower() in driver.page_source.lower()
    shot("analyst_person")
finally:
    driver.quit()

print(json.dumps(report))
