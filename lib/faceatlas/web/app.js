// The faceatlas page: a world map coloured by faces per country, and a panel with the
// selected group's characteristic face, counts and photo sources.
//
// Every string in window.FACEATLAS_DATA may come from Flickr metadata, so data reaches the
// DOM only through textContent, option.value and setAttribute on href/src/alt, and a URL is
// linked only if it parses as http or https. Groups are kept in Map objects, never as keys of
// plain objects, so a region called "__proto__" is just a name.
(function () {
  'use strict';

  const DATA = window.FACEATLAS_DATA || { groups: [] };
  const GROUPS = Array.isArray(DATA.groups) ? DATA.groups : [];
  const LEVELS = ['country', 'continent', 'world'];
  const GENDERS = ['all', 'female', 'male'];
  const AGES = ['all', 'young', 'old'];
  const SOURCES_PAGE = 100;
  const FACE_PATH = /^faces\/[A-Za-z0-9_-]+\.png$/;
  // jsvectormap's world map has three regions without an ISO code; the geocoder puts their
  // photos in these countries.
  const MAP_ALIASES = new Map([['_0', 'CY'], ['_1', 'XK'], ['_2', 'SO']]);
  const COLOUR_LOW = [219, 233, 246];
  const COLOUR_HIGH = [8, 48, 107];

  const byKey = new Map(); // level|region|gender|age -> group
  const names = new Map(); // level|region -> name
  const continentOf = new Map(); // country -> continent
  const regionsOf = new Map(); // level -> Set of regions

  const state = { level: 'world', region: null, gender: 'all', age: 'all', country: null };
  let map = null;
  let sourcesShown = SOURCES_PAGE;

  function key() {
    return Array.prototype.join.call(arguments, '\u0000');
  }

  function el(id) {
    return document.getElementById(id);
  }

  function index() {
    for (const g of GROUPS) {
      if (!g || typeof g.level !== 'string' || typeof g.region !== 'string') continue;
      byKey.set(key(g.level, g.region, g.gender, g.age_group), g);
      if (typeof g.name === 'string' && g.name) names.set(key(g.level, g.region), g.name);
      if (!regionsOf.has(g.level)) regionsOf.set(g.level, new Set());
      regionsOf.get(g.level).add(g.region);
      if (g.level === 'country' && typeof g.continent === 'string' && g.continent) {
        continentOf.set(g.region, g.continent);
      }
    }
  }

  // Known values first in their natural order, then whatever else the data holds.
  function valuesOf(field, known) {
    const seen = new Set();
    for (const g of GROUPS) if (g && typeof g[field] === 'string') seen.add(g[field]);
    const rest = Array.from(seen).filter((v) => known.indexOf(v) < 0).sort();
    return known.concat(rest);
  }

  function fillSelect(select, items) {
    select.replaceChildren();
    for (const item of items) {
      const option = document.createElement('option');
      option.value = item.value;
      option.textContent = item.label;
      select.appendChild(option);
    }
  }

  function httpUrl(text) {
    if (typeof text !== 'string') return null;
    let url;
    try {
      url = new URL(text);
    } catch (e) {
      return null;
    }
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  }

  function mapName(code) {
    const data = map && map._mapData && map._mapData.paths;
    if (data && Object.prototype.hasOwnProperty.call(data, code) && data[code].name) {
      return String(data[code].name);
    }
    return null;
  }

  function regionName(level, region) {
    if (region === null) return '';
    return names.get(key(level, region)) || (level === 'country' && mapName(region)) || region;
  }

  function number(n) {
    return typeof n === 'number' && isFinite(n) ? n.toLocaleString('en-US') : '0';
  }

  // Map region codes that show a data region (the code itself plus aliased map regions).
  function mapCodes(country) {
    const codes = [];
    if (!map) return codes;
    const candidates = [country];
    for (const [alias, target] of MAP_ALIASES) if (target === country) candidates.push(alias);
    for (const code of candidates) {
      if (Object.prototype.hasOwnProperty.call(map.regions, code)) codes.push(code);
    }
    return codes;
  }

  function colour(t) {
    const c = COLOUR_LOW.map((lo, i) => Math.round(lo + (COLOUR_HIGH[i] - lo) * t));
    return '#' + c.map((v) => v.toString(16).padStart(2, '0')).join('');
  }

  // Colour by log(1 + faces): a few countries hold most photos, so a linear scale would leave
  // nearly every other country at the lightest shade.
  function paintMap() {
    const counts = [];
    for (const region of regionsOf.get('country') || []) {
      const g = byKey.get(key('country', region, 'all', 'all'));
      if (g && g.n_faces > 0) counts.push([region, g.n_faces]);
    }
    if (!counts.length) {
      el('legend').hidden = true;
      return;
    }
    const max = Math.max.apply(null, counts.map((c) => c[1]));
    const min = Math.min.apply(null, counts.map((c) => c[1]));
    const top = Math.log1p(max);
    for (const [region, n] of counts) {
      const fill = colour(top > 0 ? Math.log1p(n) / top : 1);
      for (const code of mapCodes(region)) map.regions[code].element.setStyle('fill', fill);
    }
    el('legend-min').textContent = number(min);
    el('legend-max').textContent = number(max);
  }

  function highlight() {
    if (!map) return;
    let codes = [];
    if (state.level === 'country' && state.region !== null) {
      codes = mapCodes(state.region);
    } else if (state.level === 'continent' && state.region !== null) {
      for (const [country, continent] of continentOf) {
        if (continent === state.region) codes = codes.concat(mapCodes(country));
      }
    }
    map.setSelectedRegions(codes);
  }

  function defaultRegion(level) {
    if (level === 'country' && state.country !== null) return state.country;
    if (level === 'continent' && state.country !== null && continentOf.has(state.country)) {
      return continentOf.get(state.country);
    }
    // Otherwise the region with the most faces at this level.
    let best = null;
    let bestN = -1;
    for (const region of regionsOf.get(level) || []) {
      const g = byKey.get(key(level, region, 'all', 'all'));
      const n = g ? g.n_faces : 0;
      if (n > bestN) {
        best = region;
        bestN = n;
      }
    }
    return best;
  }

  function fillRegionList() {
    const regions = Array.from(regionsOf.get(state.level) || []);
    const items = regions.map((r) => ({ value: r, label: regionName(state.level, r) }));
    items.sort((a, b) => a.label.localeCompare(b.label));
    if (state.region !== null && regions.indexOf(state.region) < 0) {
      items.unshift({ value: state.region, label: regionName(state.level, state.region) });
    }
    fillSelect(el('region-list'), items);
    el('region-list').value = state.region === null ? '' : state.region;
  }

  function missingText(group) {
    if (!group) return 'no faces for this selection';
    const min = DATA.min_count;
    // The render stage counts sources: distinct uploaders (one user counts once).
    if (typeof min === 'number' && typeof group.n_sources === 'number' && group.n_sources < min) {
      return 'too few people: ' + number(group.n_sources) + ' (at least ' + number(min) +
        ' needed)';
    }
    if (typeof min === 'number' && group.n_faces < min) {
      return 'too few faces: ' + number(group.n_faces) + ' (at least ' + number(min) + ' needed)';
    }
    return 'not rendered' + (group.reason ? ': ' + group.reason : '');
  }

  function showFace(group, name) {
    const face = el('face');
    const missing = el('face-missing');
    const image = group && group.rendered ? group.image : null;
    if (typeof image === 'string' && FACE_PATH.test(image)) {
      face.setAttribute('src', image);
      face.setAttribute('alt', 'characteristic face: ' + name);
      face.hidden = false;
      missing.hidden = true;
      missing.textContent = '';
    } else {
      face.removeAttribute('src');
      face.setAttribute('alt', '');
      face.hidden = true;
      missing.hidden = false;
      missing.textContent = missingText(group);
    }
  }

  function link(text, url) {
    const href = httpUrl(url);
    const node = document.createElement(href ? 'a' : 'span');
    node.textContent = text;
    if (href) {
      node.setAttribute('href', href);
      node.setAttribute('rel', 'noopener noreferrer nofollow');
      node.setAttribute('target', '_blank');
    }
    return node;
  }

  function showSources(group) {
    const list = el('sources');
    const more = el('sources-more');
    const sources = group && Array.isArray(group.sources) ? group.sources : [];
    list.replaceChildren();
    for (const s of sources.slice(0, sourcesShown)) {
      if (!s || typeof s !== 'object') continue;
      const item = document.createElement('li');
      const title = typeof s.title === 'string' && s.title ? s.title : 'untitled';
      item.appendChild(link(title, s.page_url));
      if (typeof s.user === 'string' && s.user) {
        item.appendChild(document.createTextNode(' by '));
        const user = document.createElement('span');
        user.className = 'user';
        user.textContent = s.user;
        item.appendChild(user);
      }
      if (typeof s.license_name === 'string' && s.license_name) {
        item.appendChild(document.createTextNode(', '));
        item.appendChild(link(s.license_name, s.license_url));
      }
      list.appendChild(item);
    }
    let note = '';
    if (group && group.n_photos > sources.length) {
      note = 'listing ' + number(sources.length) + ' of ' + number(group.n_photos) + ' photos';
    }
    el('sources-note').textContent = note;
    more.hidden = sources.length <= sourcesShown;
    more.textContent = 'show all ' + number(sources.length);
  }

  function render() {
    const group =
      state.region === null
        ? null
        : byKey.get(key(state.level, state.region, state.gender, state.age)) || null;
    const name =
      state.region === null ? 'click a country on the map' : regionName(state.level, state.region);
    el('region-name').textContent = name;
    el('level').value = state.level;
    el('gender').value = state.gender;
    el('age').value = state.age;
    fillRegionList();
    showFace(group, name);
    el('count-faces').textContent = number(group ? group.n_faces : 0);
    el('count-photos').textContent = number(group ? group.n_photos : 0);
    el('count-users').textContent = number(group ? group.n_users : 0);
    showSources(group);
    highlight();
  }

  function select(level, region) {
    state.level = level;
    state.region = region;
    if (level === 'country' && region !== null) state.country = region;
    sourcesShown = SOURCES_PAGE;
    render();
  }

  function onMapClick(code) {
    const country = MAP_ALIASES.get(code) || code;
    if (state.level === 'continent') {
      state.country = country;
      // A country with no faces has no known continent: say so instead of guessing.
      if (continentOf.has(country)) {
        select('continent', continentOf.get(country));
      } else {
        select('country', country);
      }
    } else {
      select('country', country);
    }
  }

  function tooltip(event, tip, code) {
    const country = MAP_ALIASES.get(code) || code;
    const g = byKey.get(key('country', country, 'all', 'all'));
    const name = regionName('country', country);
    tip.text(name + ': ' + number(g ? g.n_faces : 0) + ' faces');
  }

  function about() {
    const parts = [];
    if (typeof DATA.generator === 'string') parts.push('generator ' + DATA.generator);
    if (typeof DATA.truncation === 'number') parts.push('truncation ' + DATA.truncation);
    if (typeof DATA.min_count === 'number') {
      parts.push('groups with fewer than ' + DATA.min_count + ' sources are not rendered');
    }
    if (typeof DATA.created_at === 'string') parts.push('rendered ' + DATA.created_at);
    el('about').textContent = parts.join('; ');
  }

  function makeMap() {
    if (typeof window.jsVectorMap !== 'function') {
      el('map').textContent = 'The map library did not load; use the region list.';
      return;
    }
    map = new window.jsVectorMap({
      selector: '#map',
      map: 'world',
      zoomButtons: true,
      zoomOnScroll: false,
      regionsSelectable: false,
      regionStyle: {
        initial: { fill: '#d5d8dc', stroke: '#ffffff', strokeWidth: 0.3, fillOpacity: 1 },
        hover: { fillOpacity: 0.7, cursor: 'pointer' },
        selected: { fill: '#e4572e' },
      },
      onRegionClick: (event, code) => onMapClick(code),
      onRegionTooltipShow: tooltip,
    });
  }

  function start() {
    index();
    about();
    fillSelect(el('gender'), valuesOf('gender', GENDERS).map((v) => ({ value: v, label: v })));
    fillSelect(el('age'), valuesOf('age_group', AGES).map((v) => ({ value: v, label: v })));
    const levels = LEVELS.concat(Array.from(regionsOf.keys()).filter((l) => LEVELS.indexOf(l) < 0));
    fillSelect(el('level'), levels.map((v) => ({ value: v, label: v })));
    el('level').addEventListener('change', (e) => {
      select(e.target.value, defaultRegion(e.target.value));
    });
    el('region-list').addEventListener('change', (e) => select(state.level, e.target.value));
    el('gender').addEventListener('change', (e) => {
      state.gender = e.target.value;
      render();
    });
    el('age').addEventListener('change', (e) => {
      state.age = e.target.value;
      render();
    });
    el('sources-more').addEventListener('click', () => {
      sourcesShown = Infinity;
      render();
    });
    try {
      makeMap();
    } catch (e) {
      map = null;
      el('map').textContent = 'The map could not be drawn; use the region list.';
    }
    if (map) paintMap();
    select('world', defaultRegion('world'));
    document.body.setAttribute('data-ready', 'true');
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
