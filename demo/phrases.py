# ruff: noqa: E501  (sentence tables read better unwrapped)
"""Sentence templates of the synthetic support tickets, per category and language.

Each category has *issue* sentences (the cue that decides the label), *detail* sentences
(more of the same topic) and *context* phrases (a mention of the topic that is NOT the
problem: used for multi-topic edge cases). Slots: ``{product}``, ``{order}``, ``{amount}``,
``{days}``.
"""

from __future__ import annotations

Phrases = dict[str, dict[str, tuple[str, ...]]]

ISSUES: Phrases = {
    "billing": {
        "en": (
            "I was charged twice for the same invoice.",
            "My invoice shows the wrong amount of {amount} dollars.",
            "There is a payment on my credit card statement that I do not recognise.",
            "The bill for this month is higher than my plan price.",
            "Please send me a corrected invoice with my VAT number.",
            "My card was charged {amount} dollars but the invoice says something else.",
        ),
        "es": (
            "Me cobraron dos veces la misma factura.",
            "Mi factura muestra un importe incorrecto de {amount} euros.",
            "Hay un cobro en mi tarjeta que no reconozco.",
            "La factura de este mes es más alta que el precio de mi plan.",
            "Necesito una factura corregida con mi número de IVA.",
            "Me cobraron {amount} euros en la tarjeta pero la factura dice otra cosa.",
        ),
    },
    "shipping": {
        "en": (
            "My package has not arrived after {days} days.",
            "The tracking number has not updated since the parcel was shipped.",
            "The courier says the delivery failed but I was at home.",
            "When will my order be shipped? The delivery date keeps changing.",
            "The tracking page says delivered but there is no package at my door.",
            "The parcel with the {product} is stuck in transit.",
        ),
        "es": (
            "Mi paquete no ha llegado después de {days} días.",
            "El número de seguimiento no se actualiza desde que enviaron el paquete.",
            "El mensajero dice que la entrega falló pero yo estaba en casa.",
            "¿Cuándo envían mi pedido? La fecha de entrega cambia cada día.",
            "El seguimiento dice entregado pero no hay ningún paquete en mi puerta.",
            "El envío con el {product} está parado en tránsito.",
        ),
    },
    "returns": {
        "en": (
            "I want to return the {product} because it is the wrong size.",
            "How do I send back an item? I need a return label.",
            "I would like to exchange the {product} for a different colour.",
            "The return label you sent does not work at the post office.",
            "Can I still return an item I bought {days} days ago?",
            "I am sending back the {product}, where is the return address?",
        ),
        "es": (
            "Quiero devolver el {product} porque la talla no es la correcta.",
            "¿Cómo hago una devolución? Necesito una etiqueta de devolución.",
            "Me gustaría cambiar el {product} por otro color.",
            "La etiqueta de devolución que me enviaron no funciona en correos.",
            "¿Puedo devolver un artículo que compré hace {days} días?",
            "Voy a devolver el {product}, ¿cuál es la dirección de devolución?",
        ),
    },
    "account": {
        "en": (
            "I cannot log in to my account, the password reset email never arrives.",
            "Please change the email address on my account.",
            "My account is locked after too many login attempts.",
            "I want to update my username and profile details.",
            "The two-factor code does not work when I sign in.",
            "Someone else may have access to my account, please secure my login.",
        ),
        "es": (
            "No puedo iniciar sesión, el correo para restablecer la contraseña no llega.",
            "Por favor cambien el correo electrónico de mi cuenta.",
            "Mi cuenta está bloqueada después de varios intentos de acceso.",
            "Quiero actualizar mi nombre de usuario y los datos de mi perfil.",
            "El código de verificación no funciona cuando inicio sesión.",
            "Creo que otra persona entra en mi cuenta, protejan mi acceso por favor.",
        ),
    },
    "technical": {
        "en": (
            "The app crashes every time I open the settings page.",
            "I get an error 500 when I try to load the website.",
            "The {product} firmware update failed and now it will not turn on.",
            "The page keeps loading forever and nothing happens.",
            "There is a bug in the app: the search button does nothing.",
            "The {product} does not connect to wifi after the last update.",
        ),
        "es": (
            "La aplicación se cierra cada vez que abro los ajustes.",
            "Me sale un error 500 cuando intento cargar la web.",
            "La actualización del {product} falló y ahora no enciende.",
            "La página se queda cargando y no pasa nada.",
            "Hay un fallo en la aplicación: el botón de buscar no hace nada.",
            "El {product} no se conecta al wifi desde la última actualización.",
        ),
    },
    "refund": {
        "en": (
            "I returned the {product} {days} days ago and still have no refund.",
            "When will I get my money back for the cancelled order?",
            "Please refund the {amount} dollars, the item never worked.",
            "The refund was approved but the money is not in my bank account.",
            "I want a full refund, not store credit.",
            "My refund of {amount} dollars is missing.",
        ),
        "es": (
            "Devolví el {product} hace {days} días y todavía no tengo el reembolso.",
            "¿Cuándo me devuelven el dinero del pedido anulado?",
            "Por favor reembolsen los {amount} euros, el artículo nunca funcionó.",
            "Aprobaron el reembolso pero el dinero no está en mi cuenta bancaria.",
            "Quiero un reembolso completo, no un vale de compra.",
            "Falta mi reembolso de {amount} euros.",
        ),
    },
    "cancellation": {
        "en": (
            "Please cancel my subscription before the next renewal.",
            "I want to cancel my order, I placed it by mistake.",
            "How do I stop my monthly plan? I no longer need it.",
            "Cancel my membership effective today, please.",
            "I tried to cancel the subscription online but the button is missing.",
            "Please do not renew my plan, I want to cancel it.",
        ),
        "es": (
            "Por favor cancelen mi suscripción antes de la próxima renovación.",
            "Quiero cancelar mi pedido, lo hice por error.",
            "¿Cómo me doy de baja del plan mensual? Ya no lo necesito.",
            "Cancelen mi membresía desde hoy, por favor.",
            "Intenté cancelar la suscripción en la web pero no aparece el botón.",
            "No renueven mi plan, quiero darme de baja.",
        ),
    },
    "product_question": {
        "en": (
            "Is the {product} compatible with older models?",
            "What are the dimensions of the {product}?",
            "Does the {product} come with a charger in the box?",
            "What material is the {product} made of?",
            "Can you tell me how to use the {product} outdoors?",
            "Is the {product} available in a larger size?",
        ),
        "es": (
            "¿El {product} es compatible con modelos anteriores?",
            "¿Cuáles son las medidas del {product}?",
            "¿El {product} viene con cargador en la caja?",
            "¿De qué material está hecho el {product}?",
            "¿Me pueden explicar cómo usar el {product} al aire libre?",
            "¿Tienen el {product} en una talla más grande?",
        ),
    },
}

DETAILS: Phrases = {
    "billing": {
        "en": ("Please fix the charge on my card.", "I need the invoice for my records.",
               "The payment was taken on the {days}th."),
        "es": ("Por favor corrijan el cobro en mi tarjeta.", "Necesito la factura para mis registros.",
               "El pago se hizo el día {days}."),
    },
    "shipping": {
        "en": ("The tracking shows no movement.", "I paid for express delivery.",
               "Please check with the courier."),
        "es": ("El seguimiento no muestra movimiento.", "Pagué por envío urgente.",
               "Por favor consulten con el mensajero."),
    },
    "returns": {
        "en": ("The item is unused and in its box.", "Please send a new return label.",
               "I kept the receipt for the return."),
        "es": ("El artículo está sin usar y en su caja.", "Envíen otra etiqueta de devolución.",
               "Tengo el ticket para la devolución."),
    },
    "account": {
        "en": ("I already tried resetting the password twice.", "My login worked last week.",
               "Please verify my identity and unlock the account."),
        "es": ("Ya intenté cambiar la contraseña dos veces.", "La sesión funcionaba la semana pasada.",
               "Verifiquen mi identidad y desbloqueen la cuenta."),
    },
    "technical": {
        "en": ("I already reinstalled the app.", "The error appears on every device.",
               "Restarting did not fix the bug."),
        "es": ("Ya reinstalé la aplicación.", "El error aparece en todos los dispositivos.",
               "Reiniciar no arregló el fallo."),
    },
    "refund": {
        "en": ("The refund should go back to my original card.", "I was told the refund takes 5 days.",
               "Please confirm when the money is sent."),
        "es": ("El reembolso debe volver a mi tarjeta original.", "Me dijeron que el reembolso tarda 5 días.",
               "Confirmen cuando envíen el dinero."),
    },
    "cancellation": {
        "en": ("I do not want to be charged for another month.", "Please confirm the cancellation by email.",
               "I will not renew."),
        "es": ("No quiero pagar otro mes más.", "Confirmen la cancelación por correo.",
               "No voy a renovar."),
    },
    "product_question": {
        "en": ("I want to know before I buy it.", "The product page does not say.",
               "I am comparing it with another model."),
        "es": ("Quiero saberlo antes de comprarlo.", "La página del producto no lo dice.",
               "Lo estoy comparando con otro modelo."),
    },
}

# "Not the problem" mentions of a topic: prepended to another category's issue (edge cases).
CONTEXTS: Phrases = {
    "billing": {"en": ("The payment went through fine,",), "es": ("El pago se hizo bien,",)},
    "shipping": {"en": ("The package arrived on time,",), "es": ("El paquete llegó a tiempo,",)},
    "returns": {"en": ("I do not want to return it,",), "es": ("No quiero devolverlo,",)},
    "account": {"en": ("I can log in to my account,",), "es": ("Puedo entrar en mi cuenta,",)},
    "technical": {"en": ("The app works fine,",), "es": ("La aplicación funciona bien,",)},
    "refund": {"en": ("I do not need a refund,",), "es": ("No necesito un reembolso,",)},
    "cancellation": {"en": ("I do not want to cancel,",), "es": ("No quiero cancelar,",)},
    "product_question": {"en": ("I like the product,",), "es": ("Me gusta el producto,",)},
}
CONTEXT_JOIN = {"en": "but", "es": "pero"}

GREETINGS = {
    "en": ("Hi,", "Hello,", "Hi team,", "Good morning,", "Hey there,", "Dear support,"),
    "es": ("Hola,", "Buenos días,", "Hola equipo,", "Buenas tardes,", "Saludos,", "Estimado soporte,"),
}
CLOSINGS = {
    "en": ("Thanks.", "Thank you!", "Please help.", "Regards.", "Thanks in advance."),
    "es": ("Gracias.", "¡Muchas gracias!", "Por favor, ayúdenme.", "Saludos cordiales.",
           "Gracias de antemano."),
}
CUSTOMER_MENTION = {"en": "This is customer {customer}.", "es": "Soy el cliente {customer}."}
ORDER_MENTION = {"en": "Order number {order}.", "es": "Número de pedido {order}."}
EMAIL_MENTION = {"en": "You can reach me at {email}.", "es": "Pueden escribirme a {email}."}
PRODUCTS = {
    "en": ("headphones", "smart watch", "coffee maker", "backpack", "desk lamp", "phone case",
           "running shoes", "keyboard", "blender", "tablet"),
    "es": ("auriculares", "reloj inteligente", "cafetera", "mochila", "lámpara de escritorio",
           "funda del móvil", "zapatillas", "teclado", "batidora", "tableta"),
}
FIRST_NAMES = ("ana", "luis", "maria", "john", "emma", "carlos", "sofia", "peter", "lucia",
               "david", "laura", "james", "elena", "pablo", "olivia", "diego")
LAST_NAMES = ("garcia", "smith", "lopez", "brown", "martin", "jones", "perez", "wilson",
              "sanchez", "taylor", "romero", "clark")

# Cue words of an independent keyword labeler (the measured "second annotator").
KEYWORDS: dict[str, tuple[str, ...]] = {
    "billing": ("invoice", "charged", "bill ", "payment", "credit card", "factura", "cobr",
                "tarjeta", "iva", "pago"),
    "shipping": ("package", "tracking", "courier", "delivery", "shipped", "parcel", "paquete",
                 "seguimiento", "mensajero", "entrega", "envío", "envían"),
    "returns": ("return", "send back", "exchange", "devolver", "devolución", "cambiar"),
    "account": ("log in", "login", "password", "account", "sign in", "username", "sesión",
                "contraseña", "cuenta", "usuario", "acceso"),
    "technical": ("crash", "error", "bug", "loading", "firmware", "wifi", "se cierra", "fallo",
                  "cargando", "actualización"),
    "refund": ("refund", "money back", "reembolso", "devuelven el dinero"),
    "cancellation": ("cancel", "subscription", "membership", "renew", "suscripción", "baja",
                     "membresía", "renueven"),
    "product_question": ("compatible", "dimensions", "material", "how to use", "available",
                         "medidas", "cómo usar", "viene con", "come with", "talla más"),
}
