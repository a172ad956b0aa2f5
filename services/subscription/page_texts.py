"""Sentences that pages build in code; marked with ``N_`` so the catalog check finds them.

They are translated when a page is rendered (``Pages.text``); the templates hold the rest.
"""

from __future__ import annotations


def N_(message: str) -> str:  # noqa: N802 - the gettext convention for "mark, do not translate"
    return message


SIGNUP_DONE_HEADING = N_("Check your inbox")
SIGNUP_DONE_TEXT = N_(
    "If this address can receive our mail, a message with a confirmation link is on its way. "
    "Your subscription starts when you confirm it."
)
INVALID_ADDRESS = N_("Please enter a valid email address, for example name@example.org.")
NON_ASCII_LOCAL = N_(
    "Addresses with non-Latin letters before the @ are not supported yet. "
    "Please use another address."
)
NO_LANGUAGE = N_("Please choose at least one edition.")
FORM_EXPIRED = N_("This form was open for too long. Please submit it again.")
SESSION_EXPIRED_HEADING = N_("Please try again")
SESSION_EXPIRED_TEXT = N_(
    "Your session has expired or cookies are blocked. Reload the page and submit the form again."
)
TOO_MANY_HEADING = N_("Too many attempts")
TOO_MANY_TEXT = N_("Too many attempts from your network. Please try again later.")
UNAVAILABLE_HEADING = N_("Temporarily unavailable")
UNAVAILABLE_TEXT = N_("We could not process your request just now. Please try again in a minute.")
BACK_TO_FORM = N_("Back to the signup form")
CONFIRM_HEADING = N_("Confirm your subscription")
CONFIRM_TEXT = N_("Press the button to confirm your subscription to the Weekly Digest.")
CONFIRM_TEXT_NAMED = N_("Press the button to confirm your subscription to %(name)s.")
CONFIRM_BUTTON = N_("Confirm my subscription")
CONFIRMED_HEADING = N_("Your subscription is confirmed")
CONFIRMED_TEXT = N_("Thank you. The next edition will reach you.")
INVALID_LINK_HEADING = N_("This link is not valid")
INVALID_LINK_TEXT = N_(
    "The link may be incomplete or no longer apply. Copy the whole link from the mail, "
    "or sign up again."
)
EXPIRED_HEADING = N_("This link has expired")
EXPIRED_TEXT = N_("Confirmation links are valid for 7 days. We can send you a new one.")
EXPIRED_BUTTON = N_("Send me a new link")
RESENT_TEXT = N_(
    "If your subscription is still waiting for confirmation, a new link is on its way."
)
UNSUBSCRIBE_HEADING = N_("Unsubscribe")
UNSUBSCRIBE_TEXT = N_("Press the button to stop receiving the Weekly Digest.")
UNSUBSCRIBE_TEXT_NAMED = N_("Press the button to stop receiving %(name)s.")
CONSENT_TEXT = N_(
    "We will send you the Weekly Digest in the languages you choose. You can unsubscribe at "
    "any time with the link in every mail."
)
CONSENT_TEXT_NAMED = N_(
    "We will send you %(name)s in the languages you choose. You can unsubscribe at any time "
    "with the link in every mail."
)
# The box of per-reader analytics (NEWSLETTER_PER_READER_ANALYTICS=true only); its version is
# reader_consent.TEXT_VERSION, to be bumped with any change of meaning.
READER_ANALYTICS_CONSENT = N_(
    "Count my clicks as mine: keep a record of which links in these mails I follow (issue, "
    "article, link and time), tied to my subscription, so that the editors see what I read. "
    "This is optional: without it, clicks are only counted in totals. You can withdraw at any "
    "time on the preferences page, and the record is then deleted."
)
# On the confirmation page, above the same box, when the signup form's box was ticked: anyone
# can post that form for any address, so only the owner's tick here counts.
READER_ANALYTICS_WAITING = N_(
    "The box below was ticked on the signup form. Tick it here as well to give your consent; "
    "otherwise it is not kept."
)
# Sentences that name the publication: the sample's wording (its name declined in be/ru) while
# the publication is the sample, the named form with the publication's own name otherwise.
NAMED = {
    CONFIRM_TEXT: CONFIRM_TEXT_NAMED,
    UNSUBSCRIBE_TEXT: UNSUBSCRIBE_TEXT_NAMED,
    CONSENT_TEXT: CONSENT_TEXT_NAMED,
}
UNSUBSCRIBE_BUTTON = N_("Unsubscribe")
PREFERENCES_INSTEAD = N_("Change my editions instead")
UNSUBSCRIBED_HEADING = N_("You are unsubscribed")
UNSUBSCRIBED_TEXT = N_("You will receive no more editions. You can sign up again at any time.")
SIGN_UP_AGAIN = N_("Sign up again")
PREFERENCES_SAVED = N_("Your preferences are saved.")
NOT_SUBSCRIBED_TEXT = N_("This address is not subscribed. To receive the digest again, sign up.")
OPS_WRONG_TOKEN = N_("That token is not right.")
OPS_TOO_MANY_TOKENS = N_("Too many wrong tokens; try again later.")
