// Renders the OpenAPI document that /docs carries in its page: operations grouped by tag,
// with their parameters, request bodies, responses and schemas. No network, no libraries.

const doc = JSON.parse(document.getElementById('openapi').textContent);
const schemas = (doc.components && doc.components.schemas) || {};
const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Text with `code` spans, as the document's descriptions write them. */
function md(text) {
  return String(text).split('`').map((part, i) => (i % 2 ? h('code', {}, part) : part));
}

/** `#/components/schemas/Name` -> "Name". */
const refName = (ref) => ref.split('/').pop();

/** A short type label: `string`, `integer | null`, `Message[]`, `map of string`. */
function typeLabel(s) {
  if (!s) return 'any';
  if (s.$ref) return refName(s.$ref);
  const alts = s.oneOf || s.anyOf;
  if (alts) return alts.map(typeLabel).join(' | ');
  if (s.allOf) return s.allOf.map(typeLabel).join(' & ');
  let t = Array.isArray(s.type) ? s.type.join(' | ') : s.type;
  if (t === 'array' || (Array.isArray(s.type) && s.type.includes('array'))) {
    t = t.replace('array', `${typeLabel(s.items)}[]`);
  }
  if (s.type === 'object' && s.additionalProperties && !s.properties) {
    t = `map of ${typeLabel(s.additionalProperties)}`;
  }
  if (s.format) t += ` (${s.format})`;
  if (s.enum) t += `: ${s.enum.map((v) => JSON.stringify(v)).join(', ')}`;
  return t || 'any';
}

/** The object properties of a schema, following $ref and allOf (flattened structs). */
function properties(s, seen = new Set()) {
  if (!s) return null;
  if (s.$ref) {
    const name = refName(s.$ref);
    if (seen.has(name)) return null;
    seen.add(name);
    return properties(schemas[name], seen);
  }
  if (s.allOf) {
    const out = { props: {}, required: [] };
    for (const part of s.allOf) {
      const p = properties(part, seen);
      if (p) { Object.assign(out.props, p.props); out.required.push(...p.required); }
    }
    return out;
  }
  if (s.properties) return { props: s.properties, required: s.required || [] };
  return null;
}

/** A schema as a nested list of its fields; nested objects open on demand. */
function schemaTree(s, depth = 0) {
  const p = properties(s);
  if (!p) return h('div', { class: 'schema' }, h('span', { class: 'type' }, typeLabel(s)));
  const items = Object.entries(p.props).map(([name, prop]) => {
    const inner = prop.items || prop;
    const nested = depth < 4 && (inner.$ref || inner.allOf || inner.properties) ? properties(inner) : null;
    const line = [
      h('span', { class: 'prop' }, name), ' ',
      h('span', { class: 'type' }, typeLabel(prop)),
      p.required.includes(name) ? h('span', { class: 'req' }, ' required') : null,
      prop.description ? h('span', { class: 'desc' }, ' — ', md(prop.description)) : null,
    ];
    if (!nested) return h('li', {}, line);
    return h('li', {}, h('details', {}, h('summary', {}, line), schemaTree(inner, depth + 1)));
  });
  return h('div', { class: 'schema' }, h('ul', {}, items));
}

function content(c) {
  return Object.entries(c || {}).map(([type, media]) =>
    h('div', {}, h('div', { class: 'ctype' }, type), media.schema ? schemaTree(media.schema) : null));
}

function operation(path, method, op) {
  const id = op.operationId || `${method}-${path}`;
  const secured = Array.isArray(op.security) && op.security.length > 0;
  const params = op.parameters || [];
  const el = h('article', { class: 'op', id, 'data-search': `${method} ${path} ${op.summary || ''} ${(op.tags || []).join(' ')}`.toLowerCase() },
    h('h3', {},
      h('span', { class: `method ${method}` }, method),
      h('span', { class: 'path' }, path),
      op.summary ? h('span', { class: 'summary' }, op.summary) : null,
      secured ? h('span', { class: 'lock', title: 'needs the API key' }, 'API key') : null),
    op.description ? h('p', {}, md(op.description)) : null,
    params.length ? [h('h4', {}, 'Parameters'), h('table', {},
      h('tr', {}, h('th', {}, 'name'), h('th', {}, 'in'), h('th', {}, 'type'), h('th', {}, 'description')),
      params.map((p) => h('tr', {},
        h('td', {}, h('code', {}, p.name), p.required ? h('span', { class: 'req' }, ' required') : null),
        h('td', {}, p.in), h('td', { class: 'type' }, typeLabel(p.schema)), h('td', {}, md(p.description || '')))))] : null,
    op.requestBody ? [h('h4', {}, 'Request body'), content(op.requestBody.content)] : null,
    h('h4', {}, 'Responses'),
    h('table', {}, Object.entries(op.responses || {}).map(([status, r]) => h('tr', {},
      h('td', { class: `status s${status[0]}` }, status),
      h('td', {}, md(r.description || ''), content(r.content))))));
  return el;
}

function render() {
  document.getElementById('title').textContent = `${doc.info.title} API`;
  document.getElementById('version').textContent = `${doc.info.version} · OpenAPI ${doc.openapi}`;
  document.title = `${doc.info.title} API ${doc.info.version}`;
  const intro = document.getElementById('intro');
  intro.append(h('p', {}, md(doc.info.description || '')));
  const schemes = (doc.components && doc.components.securitySchemes) || {};
  intro.append(h('p', {}, 'Authentication (any one): ', Object.values(schemes).map((s, i) => [i ? ', ' : '',
    h('code', {}, s.type === 'http' ? 'Authorization: Bearer <key>' : s.in === 'header' ? `${s.name}: <key>` : `?${s.name}=<key>`)])));

  const tags = (doc.tags || []).map((t) => t.name);
  const byTag = new Map(tags.map((t) => [t, []]));
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      if (!item[method]) continue;
      const tag = (item[method].tags || ['other'])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([path, method, item[method]]);
    }
  }
  const ops = document.getElementById('operations');
  const toc = document.getElementById('toc');
  for (const [tag, list] of byTag) {
    if (!list.length) continue;
    const info = (doc.tags || []).find((t) => t.name === tag);
    const section = h('section', { class: 'tag', 'data-tag': tag },
      h('h2', { class: 'tag-title', id: `tag-${tag}` }, tag),
      info && info.description ? h('p', { class: 'tag-desc' }, md(info.description)) : null,
      list.map(([p, m, op]) => operation(p, m, op)));
    ops.append(section);
    toc.append(h('h2', {}, tag), ...list.map(([p, m, op]) => h('a', { href: `#${op.operationId}`, 'data-op': op.operationId },
      h('span', { class: `method ${m}` }, m), h('span', { class: 'path' }, p))));
  }

  const sch = document.getElementById('schemas');
  sch.append(h('h2', { class: 'tag-title', id: 'schemas-title' }, 'Schemas'));
  for (const [name, s] of Object.entries(schemas)) {
    sch.append(h('article', { class: 'op', id: `schema-${name}` },
      h('h3', {}, h('span', { class: 'path' }, name)),
      s.description ? h('p', { class: 'desc' }, md(s.description)) : null,
      schemaTree({ $ref: `#/components/schemas/${name}` })));
  }

  document.getElementById('filter').addEventListener('input', (e) => {
    const q = e.target.value.trim().toLowerCase();
    for (const op of ops.querySelectorAll('.op')) op.hidden = q !== '' && !op.dataset.search.includes(q);
    for (const section of ops.querySelectorAll('section.tag')) {
      section.hidden = !section.querySelector('.op:not([hidden])');
    }
    for (const a of toc.querySelectorAll('a')) a.hidden = document.getElementById(a.dataset.op).hidden;
  });
  document.body.dataset.ready = 'true';
}

render();
