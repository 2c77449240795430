"""The web page of ``faceid serve`` in a real browser: the system's Chromium, headless, driven by Selenium
(`service_support.chromium_driver`), against a real ``python -m faceid serve`` on a loopback port.

One server for the module: a token, Alex Lacamoire enrolled through the API, and no camera; the page
adds camera ``door`` (the Hamilton clip, looped), so with one person enrolled the clip's other faces
are unknown and become clusters. The tests are the steps of one session in the browser, in this order,
each on what the ones before left (one class; pytest runs its tests in the order written; after a failed
step the later ones fail too, so ``-x`` stops at the one that matters):

1. sign-in: ``GET /`` is the sign-in form; a wrong token is refused, the right one opens the app,
   whose people view lists the enrolled person;
2. cameras: the page adds the camera; its card shows it running, with a live view that loads;
3. events: the clip's events with their face thumbnails; filtered by camera and person;
4. unknown people: the clip's unknown faces as clusters; the largest named on the page, enrolled
   (``GET /people``), no longer listed (``GET /unknowns``), and the clip's next play names it;
5. a correction of one of that person's events on the page: "not a known person", and what changed
   (the event, ``GET /corrections``, the enrolled photo of that face);
6. enrol by upload (Lin-Manuel Miranda, two photos), remove a photo, the delete confirmation (cancelled);
7. every view on a phone's screen: nothing wider than the screen;
8. sign out: the sign-in page again, and the old cookie refused.

Each view is screenshotted (``$FACEID_SCREENSHOTS``, or the test's temporary folder: the paths are
printed), and on each the browser console has no error and axe-core finds no WCAG 2.0/2.1 A or AA
violation. From the keyboard: the sign-in submitted with Enter, a view reached with Tab and Enter, the
delete confirmation opened on Cancel and closed with Escape.
Every wait is bounded and generous (a loaded 2-core machine); nothing asserts how long anything took.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
from conftest import KNOWN, VIDEO
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait
from service_support import axe_violations, chromium_driver, console_errors, require_browser, screenshot
from test_service_live import LACAMOIRE, MIRANDA, REQUEST_TIMEOUT_S, Server, create_token

# Generous bounds for a loaded 2-core machine; they only turn a hang into a failure that says what hung.
PAGE_TIMEOUT_S = 60.0  # the page showing what an API call answered
CAMERA_TIMEOUT_S = 120.0  # what the camera makes: frames, the live view, events
CLUSTER_TIMEOUT_S = 240.0  # the clip's unknown faces clustered (events cluster as they close)
NEXT_RUN_TIMEOUT_S = 240.0  # a later play of the clip naming the person just named
CAMERA = "door"
VISITOR = "Door Visitor"  # the name given on the page to the largest unknown cluster
PHONE = (390, 844)  # a phone's screen in CSS pixels (an iPhone 12 to 15)
CLUSTER_FACES = 3  # faces in the largest cluster before it is named: enough to be recognised again
# The console error a wrong token causes on purpose: the sign-in page comes back with status 401.
WRONG_TOKEN_ERROR = "/session - Failed to load resource: the server responded with a status of 401"


@dataclass
class WebRun:
    """The module's server, its token, the browser, and the temporary folder."""

    server: Server
    token: str
    driver: object  # selenium.webdriver.Chrome
    tmp: Path


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> Iterator[WebRun]:
    """A server with a token and one person enrolled (no camera yet), and a browser on nothing."""
    require_browser()  # before a server is started for nothing
    tmp = tmp_path_factory.mktemp("web")
    data = tmp / "data"
    token = create_token(data, label="web-tests")
    server = Server(data, token, log_dir=tmp / "logs")
    try:
        server.wait_healthy()
        server.enrol(LACAMOIRE, KNOWN / LACAMOIRE / f"{LACAMOIRE}.png")
        with chromium_driver(tmp / "screenshots") as driver:
            yield WebRun(server=server, token=token, driver=driver, tmp=tmp)
    finally:
        server.close()


# --- helpers ------------------------------------------------------------------------------------


def wait_page(run: WebRun, condition: Callable[[], object], timeout: float, what: str):
    """Poll ``condition`` (elements may be missing or replaced meanwhile) until it is truthy; its value.
    On a timeout, or when the server exits, a screenshot is saved and the failure shows the server's log."""
    def check(_driver) -> object:
        if run.server.process.poll() is not None:
            run.server.fail(f"the server exited with {run.server.process.returncode} while waiting for: {what}")
        return condition()

    try:
        return WebDriverWait(run.driver, timeout, poll_frequency=0.25,
                             ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(check)
    except TimeoutException:
        path = screenshot(run.driver, "timeout-" + re.sub(r"[^a-z0-9]+", "-", what.lower()).strip("-")[:60])
        run.server.fail(f"the page: {what}: not after {timeout:.0f} s (screenshot: {path}; "
                        f"page status: {status_text(run)!r})")


def status_text(run: WebRun) -> str:
    """What the page's status region says (a note, or an error from the API)."""
    try:
        return run.driver.find_element(By.ID, "status").text
    except NoSuchElementException:
        return ""


def says(run: WebRun, *words: str) -> None:
    """The page reports an action done: a note naming each of ``words``, and no error."""
    error, note = (run.driver.find_element(By.ID, name).text for name in ("status-error", "status-note"))
    assert not error and all(word in note for word in words), f"the page says: {status_text(run)!r}"


def css(run: WebRun, selector: str) -> list[WebElement]:
    return run.driver.find_elements(By.CSS_SELECTOR, selector)


def check_view(run: WebRun, name: str, *, allowed: tuple[str, ...] = (), idle: bool = True) -> Path:
    """Screenshot the page as ``name``; then no console error (but ``allowed``), and no axe violation.
    ``idle``: first wait for the page's actions to finish (not while a confirmation waits for an answer)."""
    if idle:
        wait_page(run, lambda: not css(run, "body[data-busy]"), PAGE_TIMEOUT_S, f"{name}: the page idle")
    path = screenshot(run.driver, name)
    errors = console_errors(run.driver, allowed)
    violations = axe_violations(run.driver)
    problems = [f"console error: {message}" for message in errors] + [
        f"accessibility ({violation['impact']}): {violation['id']}: {violation['help']} at {violation['targets']}"
        for violation in violations]
    assert not problems, f"{name} ({path}):\n" + "\n".join(problems)
    return path


def loads(run: WebRun, view: str) -> int:
    """How many times the page has (re)loaded the list of ``view`` (its section's ``data-loaded``)."""
    value = run.driver.find_element(By.ID, f"view-{view}").get_attribute("data-loaded")
    return int(value or 0)


def show_view(run: WebRun, view: str) -> None:
    """Click the view's link in the navigation and wait until its list has loaded (again: from another
    view, which the page reloads it on)."""
    if run.driver.find_element(By.TAG_NAME, "body").get_attribute("data-view") == view:
        show_view(run, "people" if view != "people" else "events")
    before = loads(run, view)
    run.driver.find_element(By.ID, f"nav-{view}").click()
    wait_page(run, lambda: run.driver.find_element(By.ID, f"view-{view}").is_displayed() and loads(run, view) > before,
              PAGE_TIMEOUT_S, f"the {view} view shown and loaded")
    assert run.driver.find_element(By.ID, f"nav-{view}").get_attribute("aria-current") == "page"


def submit_and_reload(run: WebRun, view: str, button: WebElement, what: str) -> None:
    """Click ``button`` (an action of the view) and wait until the view's list has loaded again."""
    before = loads(run, view)
    button.click()
    wait_page(run, lambda: loads(run, view) > before, PAGE_TIMEOUT_S, what)


def tab_to(run: WebRun, element_id: str, presses: int = 60) -> None:
    """Press Tab until element ``element_id`` has the focus (it must be reachable from the keyboard)."""
    for _ in range(presses):
        if run.driver.switch_to.active_element.get_attribute("id") == element_id:
            return
        ActionChains(run.driver).send_keys(Keys.TAB).perform()
    pytest.fail(f"#{element_id} not reached in {presses} presses of Tab", pytrace=False)


def image_loaded(run: WebRun, image: WebElement) -> bool:
    """Whether an <img> has a decoded picture (an MJPEG stream: its first frame)."""
    return bool(run.driver.execute_script("return arguments[0].naturalWidth > 0", image))


class FormInputs(HTMLParser):
    """The forms of an HTML page and the inputs in them: ``[(form attributes, [input attributes])]``."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[dict, list[dict]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "form":
            self.forms.append((dict(attrs), []))
        elif tag == "input" and self.forms:
            self.forms[-1][1].append(dict(attrs))


def is_signin_page(response: requests.Response) -> bool:
    """The sign-in page: HTML with a form posting to /session with a password field ``token``."""
    if not response.headers.get("content-type", "").startswith("text/html"):
        return False
    parser = FormInputs()
    parser.feed(response.text)
    return any(form.get("action") == "/session" and (form.get("method") or "").lower() == "post"
               and any(field.get("type") == "password" and field.get("name") == "token" for field in inputs)
               for form, inputs in parser.forms)


def anonymous() -> requests.Session:
    """An HTTP client with no token and no cookie, never through a proxy (loopback)."""
    session = requests.Session()
    session.trust_env = False
    return session


def newest_event_id(run: WebRun) -> int:
    return max((event["id"] for event in run.server.events()), default=0)


def clip_frames() -> int:
    """The frames in the clip, as its container says (275)."""
    import cv2

    capture = cv2.VideoCapture(str(VIDEO))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()


# --- the steps, in order ------------------------------------------------------------------------


class TestThePageInABrowser:
    """One session in the browser, step by step; each step starts where the one before left off."""

    def test_sign_in_refuses_a_wrong_token_and_the_people_view_lists_who_is_enrolled(self, web):
        server, driver = web.server, web.driver
        response = anonymous().get(server.url + "/", timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 200, response.text
        assert is_signin_page(response), response.text

        driver.get(server.url + "/")
        wait_page(web, lambda: css(web, "input#token[type=password]"), PAGE_TIMEOUT_S, "the sign-in form")
        assert driver.find_element(By.ID, "signin-error").text == ""
        check_view(web, "01-sign-in")

        driver.find_element(By.ID, "token").send_keys("not-a-token-" + "x" * 32)
        driver.find_element(By.CSS_SELECTOR, "form[action='/session'] button[type=submit]").click()
        wait_page(web, lambda: driver.find_element(By.ID, "signin-error").text, PAGE_TIMEOUT_S,
                  "the sign-in page saying the token is wrong")
        assert css(web, "input#token[type=password]") and not driver.get_cookie("faceid_session")
        check_view(web, "02-sign-in-wrong-token", allowed=(WRONG_TOKEN_ERROR,))

        driver.find_element(By.ID, "token").send_keys(web.token, Keys.ENTER)  # from the keyboard
        wait_page(web, lambda: css(web, "#view-people[data-loaded]"), PAGE_TIMEOUT_S, "the app's people view")
        assert driver.get_cookie("faceid_session"), "signed in without a session cookie"
        cards = css(web, f"#people-list li[data-person='{LACAMOIRE}']")
        assert len(cards) == 1 and cards[0].find_element(By.TAG_NAME, "h3").text == LACAMOIRE
        assert [card.get_attribute("data-person") for card in css(web, "#people-list li[data-person]")] == \
            [person["name"] for person in server.json("/people")["people"]]
        wait_page(web, lambda: all(image_loaded(web, image) for image in css(web, "#people-list img")),
                  PAGE_TIMEOUT_S, "the enrolment photos shown")
        check_view(web, "03-people")

    def test_the_page_adds_a_camera_whose_card_shows_it_running_with_a_live_view(self, web):
        server, driver = web.server, web.driver
        # From the keyboard: Tab to the view's link, Enter.
        before = loads(web, "cameras")
        tab_to(web, "nav-cameras")
        driver.switch_to.active_element.send_keys(Keys.ENTER)
        wait_page(web, lambda: loads(web, "cameras") > before, PAGE_TIMEOUT_S, "the cameras view from the keyboard")
        assert driver.switch_to.active_element == driver.find_element(By.ID, "cameras-title")  # focus moved there
        driver.find_element(By.ID, "camera-name").send_keys(CAMERA)
        driver.find_element(By.ID, "camera-source").send_keys(str(VIDEO))
        driver.find_element(By.ID, "camera-loop").click()
        submit_and_reload(web, "cameras", driver.find_element(By.CSS_SELECTOR, "#add-camera-form button[type=submit]"),
                          "the cameras view after adding a camera")
        camera = server.camera(CAMERA)
        assert camera is not None and camera["loop"] is True, server.json("/cameras")

        card = f"#camera-list li[data-camera='{CAMERA}']"
        wait_page(web, lambda: css(web, f"{card} .camera-state[data-state=running]"), CAMERA_TIMEOUT_S,
                  f"camera {CAMERA} shown running")
        live = wait_page(web, lambda: css(web, f"{card} img.live"), PAGE_TIMEOUT_S, "the live view")[0]
        assert live.get_attribute("src").endswith(f"/cameras/{CAMERA}/stream.mjpg")
        wait_page(web, lambda: image_loaded(web, live), CAMERA_TIMEOUT_S, "a frame in the live view")
        # A frame in which the clip's faces have their boxes: wait for the camera to have seen some.
        server.wait(lambda: server.camera(CAMERA)["faces"] > 0, CAMERA_TIMEOUT_S, f"faces seen by camera {CAMERA}")
        assert "running" in driver.find_element(By.CSS_SELECTOR, f"{card} .camera-state").text
        check_view(web, "04-cameras")

    def test_the_events_view_shows_the_clips_events_with_faces_and_filters_them(self, web):
        server, driver = web.server, web.driver
        server.wait(lambda: any(event["face"] and event["name"] is None for event in server.events(camera=CAMERA)),
                    CAMERA_TIMEOUT_S, f"an unknown face's event from camera {CAMERA}")
        show_view(web, "events")
        rows = css(web, "#event-list li[data-event]")
        assert rows, "the events view lists no event"
        thumbnails = "#event-list li[data-event] img.thumb"
        assert css(web, thumbnails), "no event shows a face"
        wait_page(web, lambda: all(image_loaded(web, image) for image in css(web, thumbnails)), PAGE_TIMEOUT_S,
                  "the events' face thumbnails")
        check_view(web, "05-events")

        Select(driver.find_element(By.ID, "filter-camera")).select_by_value(CAMERA)
        Select(driver.find_element(By.ID, "filter-person")).select_by_value("unknown")
        submit_and_reload(web, "events", driver.find_element(By.CSS_SELECTOR, "#events-filter button[type=submit]"),
                          "the events filtered")
        shown = {int(row.get_attribute("data-event")): row for row in css(web, "#event-list li[data-event]")}
        assert shown, "no unknown event of the camera is listed"
        for event_id, row in shown.items():
            assert row.find_element(By.CSS_SELECTOR, ".event-name").text.startswith("unknown"), event_id
            assert f"Event {event_id} · {CAMERA} ·" in row.find_element(By.CSS_SELECTOR, ".meta").text
            event = server.json(f"/events/{event_id}")
            # An open event's vote may still name it; a closed one is decided.
            assert event["camera"] == CAMERA and (event["name"] is None or not event["closed"]), event
        check_view(web, "06-events-filtered")

    def test_the_clips_unknown_faces_are_clusters_and_the_one_named_is_recognised_next_time(self, web):
        server, driver = web.server, web.driver

        def largest_cluster_faces() -> int:
            return max((cluster["faces"] for cluster in server.json("/unknowns")["unknowns"]), default=0)

        server.wait(lambda: largest_cluster_faces() >= CLUSTER_FACES, CLUSTER_TIMEOUT_S,
                    f"an unknown cluster of {CLUSTER_FACES} faces from the clip")
        show_view(web, "unknowns")
        cards = css(web, "#cluster-list li[data-cluster]")
        assert cards, "the unknown people view lists no cluster"
        # Clusters only grow or appear while the camera runs (none is joined but by a person): what the page
        # listed is still listed now.
        shown = [card.get_attribute("data-cluster") for card in cards]
        listed = {cluster["id"]: cluster for cluster in server.json("/unknowns")["unknowns"]}
        assert set(shown) <= set(listed), (shown, sorted(listed))
        largest = cards[0]  # largest first
        cluster_id = largest.get_attribute("data-cluster")
        wait_page(web, lambda: all(image_loaded(web, image) for image in css(web, "#cluster-list img")),
                  PAGE_TIMEOUT_S, "the clusters' faces")
        check_view(web, "07-unknowns")

        read_at_naming = server.camera(CAMERA)["frames_read"]
        largest.find_element(By.CSS_SELECTOR, ".cluster-name-input").send_keys(VISITOR)
        submit_and_reload(web, "unknowns", largest.find_element(By.CSS_SELECTOR, ".cluster-name-button"),
                          f"the unknown people view after naming {cluster_id}")
        says(web, cluster_id, VISITOR)
        assert not css(web, f"#cluster-list li[data-cluster='{cluster_id}']")
        check_view(web, "08-unknowns-after-naming")

        people = {person["name"]: person for person in server.json("/people")["people"]}
        assert VISITOR in people and people[VISITOR]["faces"] >= 1, people
        assert cluster_id not in [cluster["id"] for cluster in server.json("/unknowns")["unknowns"]]
        relabelled = server.events(person=VISITOR)
        assert relabelled and all(event["name"] == VISITOR for event in relabelled)

        # The next play of the clip (the camera loops; its frames_read counts on across plays) names the
        # person: an event begun after the clip started again, with that name.
        next_play = (read_at_naming // clip_frames() + 1) * clip_frames()
        server.wait(lambda: server.camera(CAMERA)["frames_read"] > next_play, NEXT_RUN_TIMEOUT_S,
                    f"camera {CAMERA} playing the clip again (frame {next_play} read)")
        replayed_after = newest_event_id(web)
        server.wait(lambda: any(event["id"] > replayed_after for event in server.events(person=VISITOR)),
                    NEXT_RUN_TIMEOUT_S, f"an event of the clip's next play naming {VISITOR}")
        newest = max(server.events(person=VISITOR), key=lambda event: event["id"])
        print(f"\n{cluster_id} named {VISITOR!r} on the page: {people[VISITOR]['faces']} faces enrolled, "
              f"{len(relabelled)} events relabelled; in the clip's next play (from frame {next_play}, events after "
              f"{replayed_after}) event {newest['id']} names them, score {newest['score']}")

        show_view(web, "people")
        card = f"#people-list li[data-person='{VISITOR}']"
        wait_page(web, lambda: css(web, f"{card} .person-photo img") and
                  all(image_loaded(web, image) for image in css(web, f"{card} .person-photo img")),
                  PAGE_TIMEOUT_S, f"{VISITOR}'s enrolled faces on the people view")
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", css(web, card)[0])
        check_view(web, "09-people-with-the-named-cluster")

    def test_a_correction_on_the_page_relabels_the_event_and_unenrols_its_face(self, web):
        server, driver = web.server, web.driver
        photos = server.json(f"/people/{VISITOR}/faces")["photos"]
        named = {event["id"]: event for event in server.events(person=VISITOR) if event["closed"]}
        # The event of an enrolled face (a cluster's best faces were enrolled), so the correction has one
        # to take back; the person keeps at least one photo.
        enrolled = [photo["event"] for photo in photos if photo["event"] in named]
        assert len(photos) >= 2 and enrolled, (photos, sorted(named))
        event_id = enrolled[-1]

        show_view(web, "events")
        Select(driver.find_element(By.ID, "filter-camera")).select_by_value(CAMERA)
        Select(driver.find_element(By.ID, "filter-person")).select_by_value(VISITOR)
        driver.find_element(By.ID, "filter-limit").clear()
        driver.find_element(By.ID, "filter-limit").send_keys("1000")
        submit_and_reload(web, "events", driver.find_element(By.CSS_SELECTOR, "#events-filter button[type=submit]"),
                          f"the events of {VISITOR}")
        row = wait_page(web, lambda: css(web, f"#event-list li[data-event='{event_id}']"), PAGE_TIMEOUT_S,
                        f"event {event_id} listed")[0]
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", row)
        check_view(web, "10-events-of-the-named-person")

        Select(row.find_element(By.CSS_SELECTOR, ".correct-select")).select_by_value("")  # not a known person
        submit_and_reload(web, "events", row.find_element(By.CSS_SELECTOR, ".correct-button"),
                          f"the events view after correcting event {event_id}")
        says(web, f"Event {event_id}", "not a known person", VISITOR)  # and the photo removed from them
        driver.execute_script("window.scrollTo(0, 0)")  # the page's note of what changed
        check_view(web, "11-event-corrected")

        event = server.json(f"/events/{event_id}")
        assert event["name"] is None and event["corrected"] is True, event
        corrections = [correction for correction in server.json("/corrections")["corrections"]
                       if correction["event"] == event_id]
        assert len(corrections) == 1, server.json("/corrections")
        assert corrections[0]["previous"] == VISITOR and corrections[0]["name"] is None, corrections
        after = server.json(f"/people/{VISITOR}/faces")["photos"]
        assert event_id not in [photo["event"] for photo in after] and len(after) == len(photos) - 1, after
        print(f"\nevent {event_id} corrected on the page from {VISITOR!r} to not a known person: its face left "
              f"{VISITOR}'s enrolment ({len(photos)} -> {len(after)} photos), correction {corrections[0]['id']}")

        # The corrected event, unfiltered, carries its badge.
        Select(driver.find_element(By.ID, "filter-person")).select_by_value("unknown")
        submit_and_reload(web, "events", driver.find_element(By.CSS_SELECTOR, "#events-filter button[type=submit]"),
                          "the unknown events")
        row = wait_page(web, lambda: css(web, f"#event-list li[data-event='{event_id}']"), PAGE_TIMEOUT_S,
                        f"event {event_id} listed as unknown")[0]
        assert row.find_elements(By.CSS_SELECTOR, ".badge-corrected"), "the corrected event has no badge"
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", row)
        check_view(web, "12-corrected-event-unknown")

    def test_a_person_enrolled_by_upload_shows_photos_one_removed_and_deletion_is_confirmed(self, web, tmp_path):
        import cv2

        server, driver = web.server, web.driver
        # The data has one photo of him; its mirror image is a second, as a phone's front camera takes it.
        photo = KNOWN / MIRANDA / f"{MIRANDA}.png"
        mirrored = tmp_path / f"{MIRANDA}-mirrored.png"
        assert cv2.imwrite(str(mirrored), cv2.flip(cv2.imread(str(photo)), 1))

        show_view(web, "people")
        driver.find_element(By.ID, "new-person-name").send_keys(MIRANDA)
        driver.find_element(By.ID, "new-person-files").send_keys("\n".join([str(photo), str(mirrored)]))
        submit_and_reload(web, "people", driver.find_element(By.CSS_SELECTOR, "#add-person-form button[type=submit]"),
                          f"the people view after enrolling {MIRANDA}")
        says(web, MIRANDA, "2 photos")
        card = f"#people-list li[data-person='{MIRANDA}']"
        wait_page(web, lambda: len(css(web, f"{card} .person-photo img")) == 2 and
                  all(image_loaded(web, image) for image in css(web, f"{card} .person-photo img")),
                  PAGE_TIMEOUT_S, f"{MIRANDA}'s two photos")
        assert len(server.json(f"/people/{MIRANDA}/faces")["photos"]) == 2
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", css(web, card)[0])
        check_view(web, "13-people-enrolled-by-upload")

        remove = css(web, f"{card} .remove-photo")[1]
        assert remove.get_attribute("aria-label") == f"Remove photo 2 of {MIRANDA}"
        submit_and_reload(web, "people", remove, f"the people view after removing a photo of {MIRANDA}")
        wait_page(web, lambda: len(css(web, f"{card} .person-photo img")) == 1, PAGE_TIMEOUT_S,
                  f"{MIRANDA} with one photo")
        assert len(server.json(f"/people/{MIRANDA}/faces")["photos"]) == 1

        css(web, f"{card} .delete-person")[0].click()
        dialog = driver.find_element(By.ID, "confirm-dialog")
        wait_page(web, lambda: dialog.get_attribute("open") is not None, PAGE_TIMEOUT_S, "the delete confirmation")
        text = driver.find_element(By.ID, "confirm-text").text
        assert all(words in text for words in (MIRANDA, "1 photo", "event")), text  # what would be erased
        assert driver.switch_to.active_element == driver.find_element(By.ID, "confirm-cancel")  # the safe choice
        check_view(web, "14-delete-person-confirmation", idle=False)
        ActionChains(driver).send_keys(Keys.ESCAPE).perform()  # cancelled from the keyboard
        wait_page(web, lambda: dialog.get_attribute("open") is None, PAGE_TIMEOUT_S, "the confirmation closed")
        assert MIRANDA in [person["name"] for person in server.json("/people")["people"]]
        assert css(web, card)

    def test_every_view_fits_a_phone_screen(self, web):
        driver = web.driver
        # A phone's screen, as Chromium's device mode makes it (the page's viewport meta applies).
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": PHONE[0], "height": PHONE[1], "deviceScaleFactor": 1, "mobile": True})
        try:
            for number, view in enumerate(("people", "cameras", "events", "unknowns"), start=15):
                show_view(web, view)
                if view == "cameras":
                    live = css(web, f"#camera-list li[data-camera='{CAMERA}'] img.live")[0]
                    wait_page(web, lambda: image_loaded(web, live), CAMERA_TIMEOUT_S, "the live view on a phone")
                overflow = driver.execute_script(
                    "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
                assert overflow <= 0, f"the {view} view is {overflow} px wider than a {PHONE[0]} px screen"
                check_view(web, f"{number}-phone-{view}")
        finally:
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def test_signing_out_ends_the_session(self, web):
        server, driver = web.server, web.driver
        cookie = driver.get_cookie("faceid_session")
        assert cookie and cookie["httpOnly"] and cookie.get("sameSite") == "Strict", cookie
        signed_in = anonymous()
        signed_in.cookies.set("faceid_session", cookie["value"])
        assert signed_in.get(server.url + "/people", timeout=REQUEST_TIMEOUT_S).status_code == 200

        driver.find_element(By.ID, "sign-out").click()
        wait_page(web, lambda: css(web, "input#token[type=password]"), PAGE_TIMEOUT_S, "the sign-in page again")
        assert not driver.get_cookie("faceid_session")
        check_view(web, "19-signed-out")
        driver.get(server.url + "/")
        wait_page(web, lambda: css(web, "input#token[type=password]"), PAGE_TIMEOUT_S, "the sign-in page on a reload")

        response = signed_in.get(server.url + "/", timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 200 and is_signin_page(response), response.text
        refused = signed_in.get(server.url + "/people", timeout=REQUEST_TIMEOUT_S)
        assert refused.status_code == 401 and "error" in refused.json(), refused.text
