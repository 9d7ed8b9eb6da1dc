// MQTT topic helpers shared by the broker gate, the rules engine and the control API.

/** True when `topic` (a concrete topic name) matches the MQTT topic filter `filter`. */
export function topicMatches (filter, topic) {
  const f = filter.split('/');
  const t = topic.split('/');
  // [MQTT-4.7.2-1]: wildcards at the first level do not match topics starting with '$'.
  if (topic.startsWith('$') && (f[0] === '#' || f[0] === '+')) return false;
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

/** Number of '/' separators; AWS allows at most 7 (8 levels). */
export function slashCount (topic) {
  let n = 0;
  for (let i = 0; i < topic.length; i++) if (topic.charCodeAt(i) === 47) n++;
  return n;
}

/** True when `filter` is a syntactically valid MQTT topic filter. */
export function validFilter (filter) {
  if (typeof filter !== 'string' || filter.length === 0) return false;
  const levels = filter.split('/');
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i];
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) return false;
    if (l.includes('+') && l !== '+') return false;
  }
  return true;
}
