/* faceid serve: the page. Vanilla ES2020, no build step; every action goes through the REST API.
 *
 * Hooks for the browser tests (stable; keep them when editing):
 *   nav links        #nav-people #nav-cameras #nav-events #nav-unknowns (current one: aria-current="page")
 *   views            section#view-people #view-cameras #view-events #view-unknowns (others [hidden])
 *   sign out         #sign-out
 *   status           #status (holds #status-note role=status and #status-error role=alert)
 *   people           ul#people-list > li[data-person="NAME"]; .person-photo img, .remove-photo buttons,
 *                    .person-files (file input of the card's drop zone; upload starts on change),
 *                    .delete-person button; form #add-person-form (#new-person-name, #new-person-files)
 *   confirm dialog   dialog#confirm-dialog, #confirm-ok, #confirm-cancel
 *   cameras          ul#camera-list > li[data-camera="NAME"]; img.live, .camera-state, .remove-camera;
 *                    form #add-camera-form (#camera-name, #camera-source, #camera-loop)
 *   events           form #events-filter (#filter-camera #filter-person #filter-since #filter-until
 *                    #filter-limit); ol#event-list > li[data-event="ID"]; .correct-select (option value ""
 *                    = not a known person), .correct-new-name, .correct-button, .badge-corrected
 *   unknowns         ul#cluster-list > li[data-cluster="c0001"]; .cluster-name-input, .cluster-name-button,
 *                    .cluster-merge-select, .cluster-merge-button (only with 2+ clusters),
 *                    .cluster-split-button, .cluster-dismiss-button; #unknowns-refresh
 *   body[data-view]  the view shown; body[data-busy] is present while any request of the page runs
 *   data-loaded      set on each view's section once its list has loaded (data-loaded="N", N increases)
 */
'use strict';

const VIEWS = ['people', 'cameras', 'events', 'unknowns'];
const CAMERA_REFRESH_MS = 3000;
const CLUSTER_THUMBNAILS = 8;

const byId = (id) => document.getElementById(id);
const csrfMeta = document.querySelector('meta[name="csrf-token"]');
const csrf = csrfMeta ? csrfMeta.content : '';

const state = { view: null, people: [], cameraTimer: null, loads: {} };

// --- small helpers ------------------------------------------------------------------------------

/** An element with a class, text and children: the only way this page makes DOM (no innerHTML). */
function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'data') Object.entries(value).forEach(([k, v]) => { node.dataset[k] = v; });
    else if (key in node && typeof value !== 'string') node[key] = value;
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of [].concat(children)) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? '' : 's'}`;
}

function when(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

const enc = encodeURIComponent;
let uniqueCounter = 0;
const uniqueId = (prefix) => `${prefix}-${++uniqueCounter}`;

function markLoaded(view) {
  state.loads[view] = (state.loads[view] || 0) + 1;
  const section = byId(`view-${view}`);
  if (section) section.dataset.loaded = String(state.loads[view]);
}

// --- status and API ----------------------------------------------------------------------------

function say(message) {
  const note = byId('status-note');
  const error = byId('status-error');
  if (error) error.textContent = '';
  if (note) note.textContent = message;
}

function fail(message) {
  const note = byId('status-note');
  const error = byId('status-error');
  if (note) note.textContent = '';
  if (error) error.textContent = message;
}

class ApiError extends Error {}

/** One call of the REST API with the session cookie and the CSRF header; the JSON answer or an ApiError. */
async function api(path, { method = 'GET', json, form } = {}) {
  const headers = { 'X-CSRF-Token': csrf, Accept: 'application/json' };
  let body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (form) {
    body = form; // the browser sets the multipart boundary
  }
  let response;
  try {
    response = await fetch(path, { method, body, headers, credentials: 'same-origin' });
  } catch (error) {
    throw new ApiError(`the server cannot be reached (${error.message})`);
  }
  if (response.status === 401) {
    window.location.assign('/'); // the session expired: back to the sign-in page
    throw new ApiError('signed out: sign in again');
  }
  let data = null;
  try {
    data = await response.json();
  } catch (error) {
    data = null;
  }
  if (!response.ok) {
    throw new ApiError((data && data.error) || `${method} ${path}: ${response.status} ${response.statusText}`);
  }
  return data;
}

/** Run an action: its errors go to the alert region, never to the console; the body is marked busy. */
let running = 0;
async function attempt(action) {
  running += 1;
  document.body.dataset.busy = '';
  try {
    return await action();
  } catch (error) {
    fail(error instanceof ApiError ? error.message : `Something went wrong: ${error.message}`);
    return undefined;
  } finally {
    running -= 1;
    if (running === 0) delete document.body.dataset.busy;
  }
}

/** A form's submit (or a button's click) runs `action` once at a time; the buttons are disabled meanwhile. */
function onSubmit(form, action) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (form.dataset.running) return;
    form.dataset.running = '';
    try {
      await attempt(action);
    } finally {
      delete form.dataset.running;
    }
  });
}

function onClick(button, action) {
  button.addEventListener('click', async () => {
    if (button.disabled) return;
    button.disabled = true;
    try {
      await attempt(action);
    } finally {
      button.disabled = false;
    }
  });
}

/** The confirmation dialog: resolves true when "ok" was pressed. */
function confirmAction(title, text, okLabel) {
  const dialog = byId('confirm-dialog');
  if (!dialog || typeof dialog.showModal !== 'function') return Promise.resolve(window.confirm(text));
  byId('confirm-title').textContent = title;
  byId('confirm-text').textContent = text;
  byId('confirm-ok').textContent = okLabel;
  return new Promise((resolve) => {
    const finish = () => {
      dialog.removeEventListener('close', finish);
      resolve(dialog.returnValue === 'ok');
    };
    dialog.returnValue = '';
    dialog.addEventListener('close', finish);
    dialog.showModal();
    byId('confirm-cancel').focus();
  });
}

function setupDialog() {
  const dialog = byId('confirm-dialog');
  if (!dialog) return;
  byId('confirm-ok').addEventListener('click', () => dialog.close('ok'));
  byId('confirm-cancel').addEventListener('click', () => dialog.close('cancel'));
}

// --- drop zones ------------------------------------------------------------------------------------

/** Dropping files on a zone puts them in its file input and fires `change`, as choosing them would. */
function makeDropZone(zone, input) {
  const stop = (event) => { event.preventDefault(); event.stopPropagation(); };
  zone.addEventListener('dragenter', (event) => { stop(event); zone.classList.add('dragging'); });
  zone.addEventListener('dragover', (event) => { stop(event); zone.classList.add('dragging'); });
  zone.addEventListener('dragleave', (event) => { stop(event); zone.classList.remove('dragging'); });
  zone.addEventListener('drop', (event) => {
    stop(event);
    zone.classList.remove('dragging');
    const files = event.dataTransfer && event.dataTransfer.files;
    if (!files || files.length === 0) return;
    input.files = files;
    input.dispatchEvent(new Event('change', { bubbles: true }));
  });
}

async function upload(name, files) {
  const form = new FormData();
  for (const file of files) form.append('images', file, file.name);
  const answer = await api(`/people/${enc(name)}/faces`, { method: 'POST', form });
  return answer;
}

// --- people --------------------------------------------------------------------------------------

async function loadPeople() {
  const { people } = await api('/people');
  state.people = people;
  fillPeopleNames();
  return people;
}

function fillPeopleNames() {
  const list = byId('people-names');
  if (list) list.replaceChildren(...state.people.map((person) => el('option', { value: person.name })));
}

async function showPeople() {
  const people = await loadPeople();
  const photos = await Promise.all(people.map((person) =>
    api(`/people/${enc(person.name)}/faces`).then((answer) => answer.photos, () => [])));
  const list = byId('people-list');
  if (!list) return;
  if (people.length === 0) {
    list.replaceChildren(el('li', { class: 'empty', text: 'Nobody is enrolled yet: add a person with a few photos.' }));
  } else {
    list.replaceChildren(...people.map((person, index) => personCard(person, photos[index])));
  }
  markLoaded('people');
}

function personCard(person, photos) {
  const name = person.name;
  const photoCount = person.photos ?? photos.length;
  const card = el('li', { class: 'card person', data: { person: name } });
  card.append(
    el('h3', { text: name }),
    el('p', { class: 'counts' }, [
      el('span', { text: plural(photoCount, 'photo') }),
      el('span', { text: plural(person.events ?? 0, 'event') }),
      el('span', { text: `corrections: ${person.corrections ?? 0}` }),
    ]));

  const gallery = el('ul', { class: 'photos' });
  photos.forEach((photo, index) => {
    // A person's last photo is not removed (the API says 409): "Delete person" erases them instead.
    let remove = null;
    if (photos.length > 1) {
      remove = el('button', { type: 'button', class: 'remove-photo quiet small', text: 'Remove photo',
        'aria-label': `Remove photo ${index + 1} of ${name}` });
      onClick(remove, async () => {
        const answer = await api(`/people/${enc(name)}/faces/${enc(photo.id)}`, { method: 'DELETE' });
        say(`Removed a photo of ${name}: ${plural(answer.faces, 'face')} left.`);
        await showPeople();
      });
    }
    gallery.append(el('li', { class: 'person-photo' }, [
      photo.url ? el('img', { src: photo.url, alt: `photo ${index + 1} of ${name}`, width: 96, height: 96 }) : null,
      remove,
    ]));
  });
  if (photos.length) card.append(gallery);

  const inputId = uniqueId('person-files');
  const input = el('input', { id: inputId, type: 'file', multiple: true, accept: 'image/*', class: 'person-files' });
  const zone = el('div', { class: 'dropzone' }, [
    el('label', { for: inputId, text: `Add photos of ${name}: drop images here or choose files` }), input]);
  makeDropZone(zone, input);
  input.addEventListener('change', () => {
    if (!input.files || input.files.length === 0) return;
    const files = Array.from(input.files);
    attempt(async () => {
      const answer = await upload(name, files);
      say(`Added ${plural(answer.added, 'face')} of ${name} from ${plural(answer.images ?? files.length, 'photo')}: ` +
        `${plural(answer.faces, 'face')} in all.`);
      await showPeople();
    });
  });
  card.append(zone);

  const remove = el('button', { type: 'button', class: 'delete-person danger', text: 'Delete person',
    'aria-label': `Delete ${name}` });
  onClick(remove, async () => {
    const events = person.events ?? 0;
    const text = `This erases ${name}: ${plural(photoCount, 'photo')}, their face vectors and ` +
      `${plural(events, 'event')} with their face crops. It cannot be undone.`;
    if (!(await confirmAction(`Delete ${name}?`, text, 'Delete'))) return;
    const answer = await api(`/people/${enc(name)}`, { method: 'DELETE' });
    say(`Deleted ${name} and ${plural(answer.events_removed ?? 0, 'event')}.`);
    await showPeople();
  });
  card.append(el('div', { class: 'actions' }, [remove]));
  return card;
}

function setupPeople() {
  const form = byId('add-person-form');
  if (!form) return;
  const nameInput = byId('new-person-name');
  const filesInput = byId('new-person-files');
  makeDropZone(filesInput.closest('.dropzone'), filesInput);
  onSubmit(form, async () => {
    const name = nameInput.value.trim();
    if (!name) throw new ApiError('Give the person a name.');
    if (!filesInput.files || filesInput.files.length === 0) throw new ApiError(`Choose photos of ${name}.`);
    const answer = await upload(name, Array.from(filesInput.files));
    form.reset();
    say(`Enrolled ${name}: ${plural(answer.added, 'face')} from ${plural(answer.images ?? 0, 'photo')}.`);
    await showPeople();
  });
}

// --- cameras -------------------------------------------------------------------------------------

const cameraCards = new Map();

function cameraCard(name) {
  const live = el('img', { class: 'live', alt: `Live view of camera ${name}`, width: 640, height: 360 });
  const remove = el('button', { type: 'button', class: 'remove-camera danger', text: 'Remove camera',
    'aria-label': `Remove camera ${name}` });
  onClick(remove, async () => {
    const text = `This stops camera ${name} and removes it. Its events are kept.`;
    if (!(await confirmAction(`Remove camera ${name}?`, text, 'Remove'))) return;
    await api(`/cameras/${enc(name)}`, { method: 'DELETE' });
    say(`Removed camera ${name}.`);
    await showCameras();
  });
  const card = el('li', { class: 'card camera', data: { camera: name } }, [
    el('h3', { text: name }),
    el('p', { class: 'camera-state badge' }),
    el('p', { class: 'camera-source' }),
    el('p', { class: 'camera-counts' }),
    el('p', { class: 'camera-error error' }),
    el('div', { class: 'live-frame' }, [live]),
    el('div', { class: 'actions' }, [remove]),
  ]);
  return card;
}

function updateCameraCard(card, camera) {
  const fps = typeof camera.fps === 'number' ? camera.fps.toFixed(1) : '—';
  const stateNode = card.querySelector('.camera-state');
  stateNode.textContent = camera.state;
  stateNode.dataset.state = camera.state;
  card.querySelector('.camera-source').textContent = `Source: ${camera.source}${camera.loop ? ' (looped)' : ''}`;
  card.querySelector('.camera-counts').textContent =
    `${fps} fps · ${camera.frames_processed ?? 0} frames processed · ${camera.frames_dropped ?? 0} dropped · ` +
    `${plural(camera.faces ?? 0, 'face')} · ${plural(camera.events ?? 0, 'event')}`;
  card.querySelector('.camera-error').textContent = camera.error || '';
}

/** The live view streams only while the cameras view is shown; leaving drops every stream. */
function setStreams(on) {
  for (const [name, card] of cameraCards) {
    const live = card.querySelector('img.live');
    if (on && !live.getAttribute('src')) live.src = `/cameras/${enc(name)}/stream.mjpg`;
    if (!on) live.removeAttribute('src');
  }
}

async function showCameras() {
  const { cameras } = await api('/cameras');
  const list = byId('camera-list');
  if (!list) return;
  const names = new Set(cameras.map((camera) => camera.name));
  for (const [name, card] of cameraCards) {
    if (!names.has(name)) {
      card.querySelector('img.live').removeAttribute('src');
      card.remove();
      cameraCards.delete(name);
    }
  }
  list.querySelectorAll('li.empty').forEach((node) => node.remove());
  for (const camera of cameras) {
    let card = cameraCards.get(camera.name);
    if (!card) {
      card = cameraCard(camera.name);
      cameraCards.set(camera.name, card);
      list.append(card);
    }
    updateCameraCard(card, camera);
  }
  if (cameras.length === 0) list.append(el('li', { class: 'empty', text: 'No cameras: add one below.' }));
  setStreams(state.view === 'cameras');
  markLoaded('cameras');
}

function setupCameras() {
  const form = byId('add-camera-form');
  if (!form) return;
  onSubmit(form, async () => {
    const name = byId('camera-name').value.trim();
    const body = { name, source: byId('camera-source').value.trim(), loop: byId('camera-loop').checked };
    const camera = await api('/cameras', { method: 'POST', json: body });
    form.reset();
    say(`Added camera ${camera.name || name}.`);
    await showCameras();
  });
}

// --- events --------------------------------------------------------------------------------------

function fillSelect(select, fixed, values) {
  const chosen = select.value;
  select.replaceChildren(...fixed.map(([value, text]) => el('option', { value, text })),
    ...values.map((value) => el('option', { value, text: value })));
  if ([...select.options].some((option) => option.value === chosen)) select.value = chosen;
}

async function fillEventFilters() {
  const [{ cameras }] = await Promise.all([api('/cameras'), loadPeople()]);
  const cameraSelect = byId('filter-camera');
  const personSelect = byId('filter-person');
  if (cameraSelect) fillSelect(cameraSelect, [['', 'Any camera']], cameras.map((camera) => camera.name));
  if (personSelect) {
    fillSelect(personSelect, [['', 'Anyone'], ['unknown', 'unknown']], state.people.map((person) => person.name));
  }
}

function eventQuery() {
  const query = new URLSearchParams();
  const value = (id) => { const node = byId(id); return node ? node.value.trim() : ''; };
  if (value('filter-camera')) query.set('camera', value('filter-camera'));
  if (value('filter-person')) query.set('person', value('filter-person'));
  for (const [id, key] of [['filter-since', 'since'], ['filter-until', 'until']]) {
    const date = value(id) ? new Date(value(id)) : null;
    if (date && !Number.isNaN(date.getTime())) query.set(key, date.toISOString());
  }
  if (value('filter-limit')) query.set('limit', value('filter-limit'));
  return query.toString();
}

async function showEvents() {
  const query = eventQuery();
  const { events } = await api(`/events${query ? `?${query}` : ''}`);
  const list = byId('event-list');
  if (!list) return;
  if (events.length === 0) {
    list.replaceChildren(el('li', { class: 'empty', text: 'No events match: they appear as cameras see faces.' }));
  } else {
    list.replaceChildren(...events.map(eventRow));
  }
  markLoaded('events');
}

function eventRow(event) {
  const name = event.name ?? 'unknown';
  const score = typeof event.score === 'number' ? `score ${event.score.toFixed(2)}` : null;
  const details = [event.camera, when(event.start), score].filter(Boolean).join(' · ');
  const row = el('li', { class: 'card event', data: { event: String(event.id) } }, [
    event.face
      ? el('img', { class: 'thumb', src: event.face, alt: `face of event ${event.id}`, width: 80, height: 80 })
      : el('p', { class: 'thumb no-face', text: 'no face image' }),
    el('div', { class: 'event-body' }, [
      el('h3', { class: event.name ? 'event-name' : 'event-name unknown', text: name }, [
        event.corrected ? el('span', { class: 'badge badge-corrected', text: 'corrected' }) : null,
        event.closed === false ? el('span', { class: 'badge badge-open', text: 'now' }) : null,
      ]),
      el('p', { class: 'meta', text: `Event ${event.id} · ${details}` }),
      correctForm(event),
    ]),
  ]);
  return row;
}

function correctForm(event) {
  const selectId = uniqueId('correct-select');
  const nameId = uniqueId('correct-new-name');
  const select = el('select', { id: selectId, class: 'correct-select' }, [
    el('option', { value: '', text: 'not a known person' }),
    ...state.people.map((person) => el('option', { value: person.name, text: person.name })),
  ]);
  select.value = event.name && state.people.some((person) => person.name === event.name) ? event.name : '';
  const newName = el('input', { id: nameId, class: 'correct-new-name', autocomplete: 'off', maxlength: 100 });
  const form = el('form', { class: 'correct-form' }, [
    el('div', { class: 'field' }, [el('label', { for: selectId, text: `Correct event ${event.id}: this is` }), select]),
    el('div', { class: 'field' }, [el('label', { for: nameId, text: 'or a new name' }), newName]),
    el('button', { type: 'submit', class: 'correct-button', text: 'Apply' }),
  ]);
  onSubmit(form, async () => {
    const typed = newName.value.trim();
    const chosen = typed || (select.value === '' ? null : select.value);
    const answer = await api(`/events/${event.id}/correct`, { method: 'POST', json: { name: chosen } });
    const parts = [`Event ${event.id} is now ${chosen ?? 'not a known person'}`];
    if (answer.removed_from) parts.push(`a photo was removed from ${answer.removed_from}`);
    if (answer.enrolled) parts.push(`its face was enrolled under ${chosen}`);
    say(`${parts.join('; ')}.`);
    await Promise.all([showEvents(), loadPeople()]);
  });
  return form;
}

function setupEvents() {
  const form = byId('events-filter');
  if (form) onSubmit(form, showEvents);
}

// --- unknown people ------------------------------------------------------------------------------

async function showUnknowns() {
  const [{ unknowns }] = await Promise.all([api('/unknowns'), loadPeople()]);
  const list = byId('cluster-list');
  if (!list) return;
  if (unknowns.length === 0) {
    list.replaceChildren(el('li', { class: 'empty',
      text: 'No unknown faces yet: they appear here as cameras see people nobody enrolled.' }));
  } else {
    const ids = unknowns.map((cluster) => cluster.id);
    list.replaceChildren(...unknowns.map((cluster) => clusterCard(cluster, ids)));
  }
  markLoaded('unknowns');
}

function clusterCard(cluster, ids) {
  const id = cluster.id;
  const cameras = (cluster.cameras || []).join(', ') || '—';
  const sample = (cluster.sample || []).slice(0, CLUSTER_THUMBNAILS);
  const card = el('li', { class: 'card cluster', data: { cluster: id } }, [
    el('h3', { text: `Unknown person ${id}` }),
    el('p', { class: 'counts', text: `${plural(cluster.faces, 'face')} · ${plural(cluster.events, 'event')}` }),
    el('p', { class: 'meta', text: `Seen ${when(cluster.first_seen)} to ${when(cluster.last_seen)} · cameras: ${cameras}` }),
  ]);
  if (sample.length) {
    card.append(el('ul', { class: 'photos' }, sample.map((eventId) => el('li', {}, [
      el('img', { src: `/events/${enc(eventId)}/face.jpg`, alt: `face of event ${eventId}`, width: 72, height: 72 }),
    ]))));
  }

  const nameId = uniqueId('cluster-name');
  const nameInput = el('input', { id: nameId, class: 'cluster-name-input', list: 'people-names',
    autocomplete: 'off', maxlength: 100, required: true });
  const nameForm = el('form', { class: 'inline-form' }, [
    el('div', { class: 'field' }, [el('label', { for: nameId, text: `Name ${id}` }), nameInput]),
    el('button', { type: 'submit', class: 'cluster-name-button', text: 'Name' }),
  ]);
  onSubmit(nameForm, async () => {
    const name = nameInput.value.trim();
    if (!name) throw new ApiError(`Type a name for ${id}.`);
    const answer = await api(`/unknowns/${enc(id)}/name`, { method: 'POST', json: { name } });
    say(`${id} is now ${answer.name ?? name}: ${plural(answer.enrolled ?? 0, 'face')} enrolled, ` +
      `${plural(answer.events ?? 0, 'event')} relabelled.`);
    await showUnknowns();
  });
  card.append(nameForm);

  const others = ids.filter((other) => other !== id);
  if (others.length) {
    const mergeId = uniqueId('cluster-merge');
    const mergeSelect = el('select', { id: mergeId, class: 'cluster-merge-select' },
      others.map((other) => el('option', { value: other, text: other })));
    const mergeForm = el('form', { class: 'inline-form' }, [
      el('div', { class: 'field' }, [el('label', { for: mergeId, text: `Merge ${id} into` }), mergeSelect]),
      el('button', { type: 'submit', class: 'cluster-merge-button', text: 'Merge' }),
    ]);
    onSubmit(mergeForm, async () => {
      const into = mergeSelect.value;
      const answer = await api(`/unknowns/${enc(id)}/merge`, { method: 'POST', json: { into } });
      say(`Merged ${id} into ${answer.into ?? into}: ${plural(answer.faces ?? 0, 'face')} now.`);
      await showUnknowns();
    });
    card.append(mergeForm);
  }

  const split = el('button', { type: 'button', class: 'cluster-split-button quiet', text: 'Split',
    'aria-label': `Split ${id} in two` });
  onClick(split, async () => {
    const answer = await api(`/unknowns/${enc(id)}/split`, { method: 'POST', json: {} });
    say(answer.new ? `Split ${id}: ${answer.new} holds part of its faces.` : `Split ${id}.`);
    await showUnknowns();
  });
  const dismiss = el('button', { type: 'button', class: 'cluster-dismiss-button quiet', text: 'Dismiss',
    'aria-label': `Dismiss ${id}` });
  onClick(dismiss, async () => {
    await api(`/unknowns/${enc(id)}/dismiss`, { method: 'POST', json: {} });
    say(`Dismissed ${id}: it is no longer listed.`);
    await showUnknowns();
  });
  card.append(el('div', { class: 'actions' }, [split, dismiss]));
  return card;
}

function setupUnknowns() {
  const refresh = byId('unknowns-refresh');
  if (refresh) onClick(refresh, showUnknowns);
}

// --- views -------------------------------------------------------------------------------------

const ENTER = {
  people: showPeople,
  cameras: showCameras,
  events: async () => { await fillEventFilters(); await showEvents(); },
  unknowns: showUnknowns,
};

const TITLES = { people: 'People', cameras: 'Cameras', events: 'Events', unknowns: 'Unknown people' };

function currentView() {
  const name = window.location.hash.replace(/^#/, '');
  return VIEWS.includes(name) ? name : 'people';
}

function route() {
  const view = currentView();
  const previous = state.view;
  if (view === previous) return;
  state.view = view;
  if (previous) say('');  // a message belongs to the view it was said in
  document.body.dataset.view = view;
  document.title = `${TITLES[view]} · faceid`;
  for (const name of VIEWS) {
    const section = byId(`view-${name}`);
    if (section) section.hidden = name !== view;
    const link = byId(`nav-${name}`);
    if (link) {
      if (name === view) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
  }
  clearInterval(state.cameraTimer);
  state.cameraTimer = null;
  setStreams(view === 'cameras');
  if (view === 'cameras') {
    state.cameraTimer = setInterval(() => {
      if (!document.body.hasAttribute('data-busy')) attempt(showCameras);
    }, CAMERA_REFRESH_MS);
  }
  if (previous !== null) {
    const heading = byId(`${view}-title`);
    if (heading) heading.focus();
  }
  attempt(ENTER[view]);
}

function setupSignOut() {
  const button = byId('sign-out');
  if (!button) return;
  button.addEventListener('click', async () => {
    try {
      await api('/session', { method: 'DELETE' });
    } catch (error) {
      // signed out or not, the sign-in page is where to go
    }
    window.location.assign('/');
  });
}

function start() {
  setupDialog();
  setupPeople();
  setupCameras();
  setupEvents();
  setupUnknowns();
  setupSignOut();
  window.addEventListener('hashchange', route);
  route();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();
