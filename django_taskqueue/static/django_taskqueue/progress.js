/*
 * django-taskqueue: live progress of tracked tasks in the browser.
 *
 * Plain JavaScript, no build step, no dependency. It follows every element with
 * a data-tq-task attribute (rendered by the {% task_progress %} template tag):
 *
 * - over the task's server-sent event stream (data-tq-stream-url) with the
 *   browser's EventSource, which reconnects by itself when the stream ends and
 *   resumes with the Last-Event-ID header;
 * - else, or when the stream is refused (too many open streams, not signed in
 *   to the API, no API) or EventSource is missing, by polling a URL that answers
 *   the task in JSON (data-tq-poll-url): every 2 seconds (data-tq-poll-interval,
 *   in ms), up to five times slower while nothing changes, and not while the
 *   page is hidden.
 *
 * It updates the parts inside the element, and those elsewhere on the page
 * that name the task with data-tq-for: data-tq-part="bar" (role=progressbar:
 * aria-valuenow), "fill", "percent", "status", "message" and "ended". It stops
 * at a terminal status. Each change dispatches a "taskqueue:progress" event on
 * the element, the end also "taskqueue:end" (event.detail: the task's state).
 *
 * window.TaskQueueProgress.scan(container) follows widgets added to the page later.
 */
(function () {
    "use strict";

    if (window.TaskQueueProgress) {
        return; // Included twice: the first copy follows every widget.
    }

    var config = readConfig();
    var TERMINAL = config.terminal || ["completed", "failed", "cancelled"];
    var POLL_MIN_MS = 2000;
    // While nothing changes, polls slow down to this many times the interval.
    var POLL_SLOWDOWN = 5;
    // After a refused stream, the page opens no new stream for this long.
    var REFUSED_PAUSE_MS = 30000;
    // A dropped stream not back after this long shows the widget as stale.
    var STALE_AFTER_MS = 5000;

    // The page's streams: at most config.maxStreams open; the other widgets poll
    // and take a stream when one is freed.
    var streams = { open: 0, refusedUntil: 0, waiting: [] };

    function readConfig() {
        var node = document.getElementById("taskqueue-progress-config");
        var data = {};
        if (node) {
            try {
                data = JSON.parse(node.textContent) || {};
            } catch (error) {
                data = {};
            }
        }
        return {
            labels: data.labels || {},
            terminal: data.terminal,
            maxStreams: typeof data.maxStreams === "number" ? data.maxStreams : 2,
        };
    }

    function isTerminal(status) {
        return TERMINAL.indexOf(status) !== -1;
    }

    function label(status) {
        if (config.labels[status]) {
            return config.labels[status];
        }
        return status ? status.charAt(0).toUpperCase() + status.slice(1) : "";
    }

    function number(value, fallback) {
        var parsed = parseInt(value, 10);
        return isNaN(parsed) ? fallback : parsed;
    }

    function canStream() {
        return (
            typeof window.EventSource === "function" &&
            streams.open < config.maxStreams &&
            Date.now() >= streams.refusedUntil
        );
    }

    function releaseStream() {
        streams.open = Math.max(0, streams.open - 1);
        // Hand the free stream to a widget that polls while it waits for one.
        while (streams.waiting.length && canStream()) {
            var next = streams.waiting.shift();
            if (!next.done) {
                next.stream();
            }
        }
    }

    function Widget(root) {
        var data = root.dataset;
        this.root = root;
        this.id = data.tqTask;
        this.streamUrl = data.tqStreamUrl || null;
        this.pollUrl = data.tqPollUrl || null;
        this.pollMin = Math.max(250, number(data.tqPollInterval, POLL_MIN_MS));
        this.pollMax = this.pollMin * POLL_SLOWDOWN;
        this.delay = this.pollMin;
        this.status = data.tqStatus;
        this.seen = null;
        this.source = null;
        this.timer = null;
        this.staleTimer = null;
        this.request = 0; // Answers of an older poll are dropped.
        this.done = false;
        this.onVisible = null;
        root.taskqueueWidget = this;
    }

    Widget.prototype.start = function () {
        if (isTerminal(this.status)) {
            this.finish("done");
        } else if (this.streamUrl && canStream()) {
            this.stream();
        } else if (this.pollUrl) {
            if (this.streamUrl && typeof window.EventSource === "function") {
                streams.waiting.push(this);
            }
            this.poll(0);
        } else if (this.streamUrl && typeof window.EventSource === "function") {
            // A stream but nothing to poll: wait for a free stream.
            streams.waiting.push(this);
            this.setMode("waiting");
        } else {
            this.setMode("static");
        }
    };

    Widget.prototype.setMode = function (mode) {
        this.root.setAttribute("data-tq-mode", mode);
    };

    Widget.prototype.stopPolling = function () {
        this.request += 1;
        if (this.timer !== null) {
            clearTimeout(this.timer);
            this.timer = null;
        }
        if (this.onVisible) {
            document.removeEventListener("visibilitychange", this.onVisible);
            this.onVisible = null;
        }
    };

    Widget.prototype.stream = function () {
        var widget = this;
        this.stopPolling();
        streams.open += 1;
        this.setMode("stream");
        var source = new EventSource(this.streamUrl);
        this.source = source;
        var receive = function (event) {
            widget.fresh();
            var task;
            try {
                task = JSON.parse(event.data);
            } catch (error) {
                return;
            }
            widget.update(task, "stream");
            if (event.type === "end" && !widget.done) {
                // The end event of a task that no longer exists has no status.
                widget.finish(task.status ? "done" : "unavailable", task.detail);
            }
        };
        source.addEventListener("progress", receive);
        source.addEventListener("end", receive);
        source.addEventListener("open", function () {
            widget.fresh();
        });
        source.addEventListener("error", function () {
            if (source.readyState === EventSource.CLOSED) {
                // Refused (429, 401, 403, 404, not an event stream): the browser
                // gives up on it. Poll instead, and let the page open no new
                // stream for a while.
                widget.dropStream();
                streams.refusedUntil = Date.now() + REFUSED_PAUSE_MS;
                releaseStream();
                if (widget.pollUrl) {
                    widget.poll(0);
                } else {
                    widget.finish("unavailable");
                }
            } else if (widget.staleTimer === null) {
                // The stream ended (its time limit) or dropped: EventSource
                // reconnects by itself, with Last-Event-ID.
                widget.staleTimer = setTimeout(function () {
                    widget.root.setAttribute("data-tq-stale", "");
                }, STALE_AFTER_MS);
            }
        });
    };

    Widget.prototype.dropStream = function () {
        if (this.source) {
            this.source.close();
            this.source = null;
            return true;
        }
        return false;
    };

    Widget.prototype.fresh = function () {
        if (this.staleTimer !== null) {
            clearTimeout(this.staleTimer);
            this.staleTimer = null;
        }
        this.root.removeAttribute("data-tq-stale");
    };

    Widget.prototype.poll = function (delay) {
        var widget = this;
        this.setMode("poll");
        this.stopPolling();
        var ticket = this.request;
        this.timer = setTimeout(function () {
            widget.timer = null;
            if (document.hidden) {
                // Nobody looks: poll again when the page is shown.
                widget.onVisible = function () {
                    if (!document.hidden) {
                        document.removeEventListener("visibilitychange", widget.onVisible);
                        widget.onVisible = null;
                        widget.poll(0);
                    }
                };
                document.addEventListener("visibilitychange", widget.onVisible);
                return;
            }
            widget.fetchOnce(ticket);
        }, delay);
    };

    Widget.prototype.fetchOnce = function (ticket) {
        var widget = this;
        if (typeof window.fetch !== "function") {
            this.setMode("static");
            return;
        }
        window
            .fetch(this.pollUrl, {
                headers: { Accept: "application/json" },
                credentials: "same-origin",
                cache: "no-store",
            })
            .then(function (response) {
                if (ticket !== widget.request || widget.done) {
                    return null;
                }
                var type = response.headers.get("Content-Type") || "";
                if (response.status === 429) {
                    var wait = number(response.headers.get("Retry-After"), 0) * 1000;
                    widget.poll(Math.max(wait, widget.pollMax));
                    return null;
                }
                if (response.status >= 500) {
                    widget.retryLater();
                    return null;
                }
                if (!response.ok || response.redirected || type.indexOf("json") === -1) {
                    // Gone, forbidden, or signed out (redirected to a login page).
                    widget.finish("unavailable");
                    return null;
                }
                return response.json().then(function (task) {
                    if (ticket !== widget.request || widget.done) {
                        return;
                    }
                    widget.fresh();
                    var changed = widget.update(task, "poll");
                    if (!widget.done) {
                        widget.delay = changed
                            ? widget.pollMin
                            : Math.min(Math.round(widget.delay * 1.5), widget.pollMax);
                        widget.poll(widget.delay);
                    }
                });
            })
            .catch(function () {
                if (ticket === widget.request && !widget.done) {
                    widget.retryLater();
                }
            });
    };

    Widget.prototype.retryLater = function () {
        // The server or the network failed: keep trying, slowly.
        this.root.setAttribute("data-tq-stale", "");
        this.delay = this.pollMax;
        this.poll(this.delay);
    };

    // Show what the task's state says; true when it changed.
    Widget.prototype.update = function (task, via) {
        if (!task || typeof task !== "object" || !task.status) {
            return false;
        }
        var status = String(task.status);
        var percent = Math.max(0, Math.min(100, Math.round(Number(task.progress) || 0)));
        var message = task.progress_message || "";
        if ((status === "failed" || status === "cancelled") && task.error_message) {
            message = task.error_message;
        }
        var key = status + "\u0000" + percent + "\u0000" + message;
        var changed = key !== this.seen;
        this.seen = key;
        this.root.setAttribute("data-tq-via", via);
        var ended = isTerminal(status) && !isTerminal(this.status);
        this.status = status;
        if (changed) {
            this.render(status, percent, message, ended);
            this.root.dispatchEvent(
                new CustomEvent("taskqueue:progress", { detail: task, bubbles: true })
            );
        }
        if (isTerminal(status)) {
            this.root.dispatchEvent(new CustomEvent("taskqueue:end", { detail: task, bubbles: true }));
            this.finish("done");
        }
        return changed;
    };

    Widget.prototype.parts = function (name) {
        var inside = Array.prototype.slice.call(
            this.root.querySelectorAll('[data-tq-part="' + name + '"]')
        );
        var id = window.CSS && CSS.escape ? CSS.escape(this.id) : this.id;
        var elsewhere = document.querySelectorAll(
            '[data-tq-for="' + id + '"][data-tq-part="' + name + '"], ' +
                '[data-tq-for="' + id + '"] [data-tq-part="' + name + '"]'
        );
        return inside.concat(Array.prototype.slice.call(elsewhere));
    };

    function setStatusClass(element, status) {
        var classes = Array.prototype.slice.call(element.classList);
        classes.forEach(function (name) {
            if (name.indexOf("tq-status-") === 0) {
                element.classList.remove(name);
            }
        });
        element.classList.add("tq-status-" + status);
    }

    Widget.prototype.render = function (status, percent, message, ended) {
        var text = (percent + "% " + message).trim();
        this.root.setAttribute("data-tq-status", status);
        this.parts("bar").forEach(function (bar) {
            bar.setAttribute("aria-valuenow", String(percent));
            bar.setAttribute("aria-valuetext", text);
            bar.setAttribute("title", text);
        });
        this.parts("fill").forEach(function (fill) {
            fill.style.width = percent + "%";
            setStatusClass(fill, status);
        });
        this.parts("percent").forEach(function (element) {
            element.textContent = percent + "%";
        });
        this.parts("status").forEach(function (element) {
            element.textContent = label(status);
            setStatusClass(element, status);
        });
        this.parts("message").forEach(function (element) {
            element.textContent = message;
        });
        if (ended) {
            this.parts("ended").forEach(function (element) {
                element.hidden = false;
            });
        }
    };

    Widget.prototype.finish = function (mode, detail) {
        this.done = true;
        this.stopPolling();
        this.fresh();
        if (this.dropStream()) {
            releaseStream();
        }
        if (detail) {
            this.parts("message").forEach(function (element) {
                element.textContent = detail;
            });
        }
        this.setMode(mode);
    };

    function scan(container) {
        var roots = (container || document).querySelectorAll("[data-tq-task]");
        Array.prototype.forEach.call(roots, function (root) {
            if (!root.taskqueueWidget) {
                new Widget(root).start();
            }
        });
    }

    window.TaskQueueProgress = { scan: scan };

    if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", function () {
            scan(document);
        });
    } else {
        scan(document);
    }
})();
